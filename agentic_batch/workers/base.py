"""The protocol between the engine and every worker kind.

A worker turns one unit (rendered prompt + payload) into a `UnitOutcome`. It never touches the store:
it reports progress through `ctx.emit(kind, data)` and the engine persists events in batches. It
never retries: it classifies its error and the engine's single retry loop decides. A worker that
starts processes registers their process groups with `ctx.processes`, so a timeout, a cancel or the
executor's death takes the whole group down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from agentic_batch.attempts import AttemptFields


class ErrorClass(StrEnum):
    #: Transient (429, 5xx, 529, timeouts, connection resets): back off and try again.
    retryable = "retryable"
    #: Usage limit reached until a reset time: pause the job, do not spend the unit's retries.
    quota = "quota"
    #: Will fail the same way again (400/401/403, spend cap, bad output): fail the unit now.
    permanent = "permanent"


class FailureKind(StrEnum):
    """What went wrong in a failed attempt, as data the engine acts on (the worker that knows it sets
    it; nothing matches error text later). The class says what the retry loop does; the kind says why."""

    #: HTTP 429 / the provider's rate-limit error: the pool lowers its in-flight limit.
    rate_limited = "rate_limited"
    #: HTTP 529 / "overloaded": treated like a rate limit by the pool.
    overloaded = "overloaded"
    #: A usage quota is exhausted until a reset time (class quota).
    quota = "quota"
    #: A spending cap or credit limit (402, "credit balance is too low").
    spend_cap = "spend_cap"
    #: Another 5xx (or 408/409/425) from the provider.
    server_error = "server_error"
    #: The attempt, or one model request, ran out of time.
    timeout = "timeout"
    #: No answer at all: connection refused, reset, DNS.
    connection = "connection"
    #: Credentials refused (401/403, the Claude CLI's authentication_failed).
    auth = "auth"
    #: The provider refused the request as malformed (400/404/413/422...).
    bad_request = "bad_request"
    #: The provider's answer could not be parsed.
    malformed_response = "malformed_response"
    #: The output does not validate against the job's output_schema (its message is fed back).
    schema_invalid = "schema_invalid"
    #: The agent hit its own limit (max turns, max budget) without an answer.
    agent_limit = "agent_limit"
    #: A command (or agent process) exited with a non-zero status.
    exit_status = "exit_status"
    #: A command was killed by a signal.
    killed = "killed"
    #: An exception escaped the worker or the engine's handling of the attempt.
    crashed = "crashed"
    #: The worker could not start: a missing binary, key or option.
    setup = "setup"
    #: The unit's prompt could not be rendered.
    prompt = "prompt"
    #: An isolated job's --verify command refused the attempt's change (its output is fed back).
    verify_failed = "verify_failed"
    #: An isolated job's agent changed nothing under --require-changes.
    no_changes = "no_changes"
    #: An MCP tool answered with `isError` (the `mcp` worker): the tool's own refusal, not transport.
    tool_error = "tool_error"


#: Kinds that mean "slow down": the pool halves its in-flight limit on a burst of them.
RATE_LIMIT_KINDS = frozenset({FailureKind.rate_limited, FailureKind.overloaded})


class RetryableError(Exception):
    """Raise from a `python` worker function to ask for a retry (any other exception does too)."""


class PermanentError(Exception):
    """Raise from a `python` worker function to fail the unit without retrying."""


class CallGate(Protocol):
    """The engine's rate limiter (--rpm/--tpm), awaited by a worker before each model call."""

    @property
    def active(self) -> bool:
        """True when some limit is set (a worker whose agent makes its own calls must then route them
        through something that calls `before_call` per call; see claude_gateway). Read-only: a
        property in `RateGate`, a class attribute in `OpenGate`."""
        ...

    async def before_call(self, estimated_tokens: int = 0) -> None: ...

    def after_call(self, tokens_used: int) -> None: ...


class OpenGate:
    """A gate that never waits: the default when a job sets no rate limits."""

    active = False

    async def before_call(self, estimated_tokens: int = 0) -> None:
        return None

    def after_call(self, tokens_used: int) -> None:
        return None


class ProcessTracker(Protocol):
    """Where workers register the process groups they start (killed on timeout, cancel, death).

    A worker that starts processes itself (not through `workers.process.spawn`) adds `child_env()` to
    their environment: the engine finds a process that left its session by that marker.
    """

    def add(self, pgid: int) -> None: ...

    def discard(self, pgid: int) -> None: ...

    def child_env(self) -> dict[str, str]:
        """Variables every process of the unit must carry (its marker); may be empty."""
        ...

    def cgroup_procs(self) -> str | None:
        """The `cgroup.procs` file a new process writes "0" to before it execs, or None."""
        ...


#: The rest of an agent's exit, handed to `UnitContext.defer_exit`: called once with a grace period, it
#: waits up to that many seconds for the agent to exit on its own, then kills whatever of its processes
#: is left (at once when cancelled, then re-raising).
ExitTail = Callable[[float], Awaitable[None]]


@dataclass
class UnitContext:
    """What a worker gets for one attempt at one unit."""

    job_id: int
    job_name: str
    unit_id: int | None  # None for the job's reduce step
    key: str
    seq: int
    attempt: int
    prompt: str | None
    payload: dict[str, Any]
    source_kind: str
    #: Directory the agent works in (cwd).
    workspace: Path
    #: Directories the agent may read and write (the workspace is always one).
    allowed_dirs: list[Path]
    timeout: float
    emit: Callable[[str, dict[str, Any]], None]
    processes: ProcessTracker
    #: The previous attempt's error, fed back to agents (e.g. a schema validation message).
    feedback: str | None = None
    #: Variables a template may use beside the payload (unit, job, prompt).
    template_vars: dict[str, Any] = field(default_factory=dict)
    #: Await `gate.before_call()` before every model request; report tokens with `after_call`.
    gate: CallGate = field(default_factory=OpenGate)
    #: The directory the job was created from: commands run here, relative paths resolve here.
    workdir: Path | None = None
    #: Bytes of output a worker needs to hold (the job's --max-output-bytes, less room for a marker).
    #: The engine cuts longer output to head + tail and writes the whole text to `full_output_path`;
    #: a worker that bounds its own buffer should write the whole output there itself and name it.
    max_output_bytes: int | None = None
    #: Where this attempt's whole output belongs when it is longer than the cap.
    full_output_path: Path | None = None
    #: An isolated job's attempt (`--isolate worktree`): maps a path of the user's checkout to the same
    #: path in the attempt's worktree (None when outside the repository). Workers with path options of
    #: their own (a cwd, extra directories) pass them through `in_worktree()`.
    path_map: Callable[[Path], Path | None] | None = None
    #: Where a worker registers processes that outlive the unit to serve later ones (the `mcp`
    #: worker's servers): not killed when the unit ends, killed when the executor exits or dies.
    #: None outside an executor (the worker then kills them itself when closed).
    shared_processes: ProcessTracker | None = None
    #: Where a worker that has its outcome while its agent is still exiting (the Claude CLI flushing
    #: its transcript after its result) may hand over the rest of that exit, just before it returns:
    #: the engine then records the result and starts the next unit at once, and runs the tail in the
    #: background (the unit's processes are killed when it is done; the executor waits for every tail
    #: before the job ends). None (outside an executor's pool, or where something still follows the
    #: worker in the attempt, such as an isolated job's commit): the worker waits for the exit itself.
    defer_exit: Callable[[ExitTail], None] | None = None

    def in_worktree(self, path: Path) -> Path:
        """`path` as this attempt sees it: inside its worktree when the job is isolated and the path is
        in the repository; otherwise unchanged."""
        if self.path_map is None:
            return path
        return self.path_map(path) or path


@dataclass(kw_only=True)
class UnitOutcome(AttemptFields):
    """The result of one attempt. `error` set means the attempt failed, classified by `error_class`
    (an `ErrorClass`) and described by `error_kind` (a `FailureKind`)."""

    #: Seconds to wait before the next try (from retry-after), or until a quota resets.
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, error: str, error_class: ErrorClass, kind: FailureKind | None = None,
                **extra: Any) -> UnitOutcome:
        return cls(error=error, error_class=error_class, error_kind=kind, **extra)


class Worker(Protocol):
    """A worker may also offer `prepare()` (sync: run once in a thread while the executor starts, e.g.
    to import a heavy SDK) and `async aclose()` (called once when the job's run ends)."""

    kind: str

    async def run(self, ctx: UnitContext) -> UnitOutcome: ...


Options = TypeVar("Options", bound=BaseModel)


@dataclass(frozen=True)
class WorkerKind(Generic[Options]):
    """A registry entry: how to validate options and build a worker of one kind. Generic in the
    kind's options model, so its factory and checks are typed against that model."""

    kind: str
    summary: str
    options_model: type[Options]
    factory: Callable[[Options], Worker]
    #: Agent workers need a prompt; command and python workers may do without.
    prompt_required: bool = True
    #: Whether a unit's work happens where the attempt says (its worktree, with isolate=worktree); not
    #: for a worker whose processes serve every unit from one place (the mcp worker's shared servers).
    isolatable: bool = True
    #: Create-time checks beyond the options model: check(options, prompt_template, workdir);
    #: raise InvalidSpec (e.g. the function does not import, a config file is missing).
    check: Callable[[Options, str | None, Path], None] | None = None
    #: Create-time check against the first items: sample_check(options, payloads, rendered_prompts,
    #: workdir); e.g. the command worker renders its argv templates so a missing field fails before any
    #: job exists, the mcp worker checks its rendered arguments against the tool's input schema.
    sample_check: Callable[[Options, list[dict[str, Any]], list[str | None], Path], None] | None = None

    def parse_options(self, raw: dict[str, Any]) -> Options:
        from pydantic import ValidationError

        from agentic_batch.errors import InvalidSpec
        from agentic_batch.spec import describe_validation_error

        try:
            return self.options_model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidSpec(f"{self.kind} worker: {describe_validation_error(exc, 'worker_options')}") from None

    def build(self, raw: dict[str, Any]) -> Worker:
        return self.factory(self.parse_options(raw))
