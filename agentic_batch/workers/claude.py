"""The `claude` worker: Claude Code, through the official claude-agent-sdk, one CLI run per unit.

The SDK spawns the real `claude` CLI (bundled in its wheel), which runs the whole agent loop: model
calls, Read / Write / Bash tools in the unit's workspace. We stream every message it reports into
`ctx.emit` as it arrives, and turn the final `ResultMessage` into a `UnitOutcome`.

What the engine relies on here:

* One retry loop, the engine's: the CLI's own API retries are turned off with
  `CLAUDE_CODE_MAX_RETRIES=0` (unless the user set that variable), and failures are classified
  (retryable / quota / permanent) from the HTTP status the CLI reports and the error text.
* Nothing outlives the unit: the CLI runs in its own process group, dies with the executor, and is
  killed as a group on completion, timeout or cancellation (see `claude_process`).
* A good result frees the unit's slot at once: in an executor's pool (`UnitContext.defer_exit`) the
  unit's outcome is returned when the `ResultMessage` arrives, and the CLI's exit (it flushes its
  session transcript, ~0.1 s) goes on in the background, where the group is killed once it is gone, or
  after `ABP_EXIT_GRACE_SECONDS` (10 s) if it is not. The events stored are the same (a good run
  prints nothing after its result; anything it did would be stored after the unit's `end`). The
  executor waits for every exit before the job ends, so a job's CLIs never outlive it; while a job
  runs, up to `concurrency` more CLIs than its slots may be exiting, each briefly.
* The environment passes through (ANTHROPIC_BASE_URL, proxies, Bedrock/Vertex settings); a missing
  credential is reported before anything is spawned.
* `--rpm/--tpm` hold for each of the CLI's model calls: a rate-limited job's CLIs reach the model
  through `claude_gateway` (a forwarder on 127.0.0.1 that awaits the job's gate per call).
* The user's `~/.claude` stays as it was: the CLI gets a config dir of the job's own
  (`$ABP_HOME/jobs/<job>/claude`, see `claude_config`), where its session transcripts go, while it
  still reads the user's credentials, settings and instructions.

The SDK is imported lazily: `abp` without the `claude` extra still starts, and asking for this
worker says which extra to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentic_batch.errors import InvalidSpec
from agentic_batch.workers import classify
from agentic_batch.workers.base import CallGate, ErrorClass, FailureKind, UnitContext, UnitOutcome, WorkerKind

if TYPE_CHECKING:
    from agentic_batch.workers.claude_messages import RunState

INSTALL_HINT = "pip install 'agentic-batch[claude]'"
AUTH_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
             "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
AUTH_HELP = ("set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a gateway), or CLAUDE_CODE_USE_BEDROCK=1 / "
             "CLAUDE_CODE_USE_VERTEX=1 with that cloud's credentials, or log in once with `claude login`")
_AUTH_WORDS = ("not logged in", "failed to authenticate", "invalid api key", "authentication_error",
               "authentication failed", "/login", "oauth token")
#: Defaults the CLI gets unless the user's environment says otherwise.
_CLI_ENV_DEFAULTS = {"CLAUDE_CODE_MAX_RETRIES": "0", "DISABLE_AUTOUPDATER": "1"}
_STDERR_TAIL_LINES = 30


def sdk_installed() -> bool:
    return importlib.util.find_spec("claude_agent_sdk") is not None


def _split_list(value: Any) -> Any:
    """Accept `"Read,Write"` as well as `["Read", "Write"]` (flags give strings)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):  # a repeated flag gives a list of possibly comma-joined strings
        return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
    return value


class ClaudeOptions(BaseModel):
    """Options of the `claude` worker; each maps onto a Claude Code CLI flag."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    max_turns: int | None = Field(default=None, ge=1)
    allowed_tools: list[str] = Field(default_factory=list)
    disallowed_tools: list[str] = Field(default_factory=list)
    #: acceptEdits by default: a batch has nobody to answer permission prompts, and edits in the
    #: unit's workspace are the point. Other tools (Bash) need allowed_tools or bypassPermissions.
    permission_mode: Literal["default", "acceptEdits", "plan", "bypassPermissions"] = "acceptEdits"
    add_dir: list[str] = Field(default_factory=list)
    cwd: str | None = None
    system_prompt_append: str | None = None
    mcp_config: str | None = None
    max_budget_usd: float | None = Field(default=None, gt=0)
    cli_path: str | None = None

    _split_tools = field_validator("allowed_tools", "disallowed_tools", mode="before")(_split_list)

    @field_validator("add_dir", mode="before")
    @classmethod
    def _one_or_many_dirs(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("mcp_config")
    @classmethod
    def _mcp_config_parses(cls, value: str | None) -> str | None:
        """Fail at create time, not in every unit: the file must exist and name mcpServers."""
        if value is None:
            return None
        path = Path(value).expanduser().resolve()
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
            raise ValueError(f'{path} must be a JSON object with an "mcpServers" object')
        return str(path)

    @field_validator("cli_path")
    @classmethod
    def _cli_exists(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ValueError(f"{path} is not an executable file")
        return str(path.resolve())

    @model_validator(mode="after")
    def _sdk_present(self) -> ClaudeOptions:
        if not sdk_installed():
            raise ValueError(f"the claude worker needs claude-agent-sdk: {INSTALL_HINT}")
        return self


def missing_auth(environ: Mapping[str, str], home: Path | None = None) -> str | None:
    """Why the CLI could not authenticate, or None when some credential is configured.

    Checked before spawning so 10,000 units fail with one clear message instead of 10,000 CLI
    runs printing "Not logged in". macOS keeps `claude login` credentials in the Keychain, which
    we cannot see, so there we trust the CLI to report.
    """
    if any(environ.get(var) for var in AUTH_VARS) or sys.platform == "darwin":
        return None
    home = home or Path(environ.get("HOME") or Path.home())
    config_dir = Path(environ.get("CLAUDE_CONFIG_DIR") or home / ".claude")
    if (config_dir / ".credentials.json").is_file():
        return None
    settings = config_dir / "settings.json"
    with contextlib.suppress(OSError, ValueError):
        if "apiKeyHelper" in json.loads(settings.read_text()):
            return None
    return (f"no credentials for Claude Code: none of {', '.join(AUTH_VARS)} is set and there is no "
            f"{config_dir / '.credentials.json'}; {AUTH_HELP}")


def _looks_like_auth_failure(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _AUTH_WORDS)


def _with_stderr(message: str, stderr_tail: deque[str]) -> str:
    if not stderr_tail:
        return message
    tail = "\n".join(stderr_tail)[-4000:]
    return f"{message}\nClaude Code stderr (last lines):\n{tail}"


def classify_result(state: RunState) -> tuple[str, ErrorClass, float | None, FailureKind | None]:
    """(message, class, retry_after, kind) for a result the CLI marked `is_error`.

    The CLI's structured signals come first: its `api_error_status`, its assistant message's `error`
    ("authentication_failed", "rate_limit") and its rate-limit events' reset time. Only a result with
    none of them (a request that never got a proper answer, a run that broke mid-way) is read from
    its text (`classify.message_kind`): the CLI reports nothing else there."""
    from agentic_batch.workers.claude_messages import seconds_until

    result = state.result
    assert result is not None
    text = (result.result or "; ".join(result.errors or []) or state.last_text or result.subtype).strip()
    status = result.api_error_status
    if state.assistant_error == "authentication_failed" or status == 401 or _looks_like_auth_failure(text):
        return (f"Claude Code could not authenticate: {text} ({AUTH_HELP})", ErrorClass.permanent, None,
                FailureKind.auth)
    reset = classify.quota_reset_in(text)
    if reset is not None:
        return text, ErrorClass.quota, reset or seconds_until(state.rate_limit_resets_at), FailureKind.quota
    rate_limited = status == 429 or state.assistant_error == "rate_limit"
    if state.rate_limit_resets_at is not None and rate_limited:
        return text, ErrorClass.quota, seconds_until(state.rate_limit_resets_at), FailureKind.rate_limited
    if result.subtype.startswith("error_max_"):  # max turns / max budget: the same run ends the same way
        return f"Claude Code stopped: {result.subtype} ({text})", ErrorClass.permanent, None, FailureKind.agent_limit
    if status is not None:
        return text, classify.classify_status(status, text), None, classify.status_kind(status, text)
    if rate_limited:
        return text, ErrorClass.retryable, None, FailureKind.rate_limited
    # No HTTP status: the request never got a proper answer (connection refused, a malformed or cut
    # stream) or the run broke mid-way; both are worth another attempt unless the text says otherwise.
    transient = result.terminal_reason == "api_error" or result.subtype == "error_during_execution"
    fallback = ErrorClass.retryable if transient else ErrorClass.permanent
    return text, classify.classify_message(text) or fallback, None, classify.message_kind(text)


def classify_crash(exc: BaseException,
                   stderr_tail: deque[str] | None = None) -> tuple[str, ErrorClass, FailureKind]:
    """A CLI that died or could not start, without a result to go by.

    Retryable by default (a killed or crashed process may well succeed next time), except for the
    refusals that will repeat on every attempt: a missing binary, bad credentials, and the CLI's
    refusal to bypass permissions as root.
    """
    from claude_agent_sdk import CLINotFoundError

    text = f"{type(exc).__name__}: {exc}"
    seen = f"{text}\n" + "\n".join(stderr_tail or ())
    if isinstance(exc, CLINotFoundError):
        return f"Claude Code CLI not found: {exc}", ErrorClass.permanent, FailureKind.setup
    if _looks_like_auth_failure(seen):
        return f"Claude Code could not authenticate: {text} ({AUTH_HELP})", ErrorClass.permanent, FailureKind.auth
    if "cannot be used with root" in seen:
        return ("Claude Code refuses permission_mode=bypassPermissions as root: run the executor as "
                "another user, or set IS_SANDBOX=1 inside a container or VM"), ErrorClass.permanent, FailureKind.setup
    if "unknown option" in seen.lower():
        return (f"Claude Code rejected its arguments (cli_path too old?): {text}", ErrorClass.permanent,
                FailureKind.setup)
    return f"Claude Code failed: {text}", ErrorClass.retryable, FailureKind.crashed


class ClaudeWorker:
    """Runs one unit as one Claude Code CLI session."""

    kind = "claude"

    def __init__(self, options: ClaudeOptions) -> None:
        self.options = options
        self._gateway: Any = None  # claude_gateway.ModelCallGateway, once a rate-limited unit needs it
        #: Variables that send the CLI to each job's private config dir, prepared once per worker.
        self._config_env: dict[Path, dict[str, str]] = {}

    async def _gateway_url(self, gate: CallGate) -> str | None:
        """The local gateway that applies --rpm/--tpm to each of the CLI's model calls, if the job has
        limits and the CLI uses ANTHROPIC_BASE_URL; else None (the gate is then applied per unit)."""
        if not gate.active:
            return None
        from agentic_batch.workers import claude_gateway

        if not claude_gateway.applies(os.environ):
            return None
        if self._gateway is None:
            upstream = os.environ.get("ANTHROPIC_BASE_URL") or claude_gateway.DEFAULT_UPSTREAM
            gateway = claude_gateway.ModelCallGateway(upstream, gate)
            await gateway.start()
            self._gateway = gateway
        return str(self._gateway.url)

    def _private_config(self, job_dir: Path) -> dict[str, str]:
        """The job's Claude config dir, created or refreshed from the user's on first use by this worker
        (so a settings change reaches the next executor, not a unit mid-way)."""
        from agentic_batch.workers import claude_config

        private = job_dir / "claude"
        env = self._config_env.get(private)
        if env is None:
            env = self._config_env[private] = claude_config.prepare(private, os.environ)
        return env

    async def aclose(self) -> None:
        if self._gateway is not None:
            gateway, self._gateway = self._gateway, None
            await gateway.close()

    def _dirs(self, ctx: UnitContext) -> tuple[Path, list[str]]:
        cwd = ctx.workspace
        if self.options.cwd:
            given = Path(self.options.cwd).expanduser()
            cwd = ctx.in_worktree(given) if given.is_absolute() else ctx.workspace / given
        add: list[str] = []
        dirs: list[str | Path] = [*(ctx.in_worktree(Path(d).expanduser()) for d in self.options.add_dir),
                                  *ctx.allowed_dirs]
        for d in dirs:
            resolved = str(Path(d).expanduser().resolve())
            if resolved != str(cwd.resolve()) and resolved not in add:
                add.append(resolved)
        return cwd, add

    def _sdk_options(self, ctx: UnitContext, cli: Path, env: dict[str, str],
                     on_stderr: Any) -> Any:
        from claude_agent_sdk import ClaudeAgentOptions

        cwd, add_dirs = self._dirs(ctx)
        opts = self.options
        # The preset keeps Claude Code's own system prompt (the SDK's default is an empty one).
        system_prompt: dict[str, str] = {"type": "preset", "preset": "claude_code"}
        if opts.system_prompt_append:
            system_prompt["append"] = opts.system_prompt_append
        return ClaudeAgentOptions(
            cwd=str(cwd),
            add_dirs=list(add_dirs),
            model=opts.model,
            max_turns=opts.max_turns,
            allowed_tools=list(opts.allowed_tools),
            disallowed_tools=list(opts.disallowed_tools),
            permission_mode=opts.permission_mode,
            system_prompt=system_prompt,  # type: ignore[arg-type]
            mcp_servers=opts.mcp_config or {},
            max_budget_usd=opts.max_budget_usd,
            cli_path=str(cli),
            env=env,
            stderr=on_stderr,
        )

    def prepare(self) -> None:
        """Import the SDK (about a second of CPU) in the engine's start-up thread, not in a unit; and pick
        and write the launcher there too (the pick runs `setpriv --help`: a fork and exec that would
        otherwise run on the event loop, in the first unit, while the first CLIs wait to start)."""
        if not sdk_installed():
            return
        import claude_agent_sdk  # noqa: F401

        from agentic_batch.workers.claude_process import ensure_wrapper, launcher_kind, supports_process_groups

        if supports_process_groups():
            from agentic_batch.config import load_settings

            with contextlib.suppress(OSError, RuntimeError):  # a unit that needs it reports the problem
                ensure_wrapper(load_settings().run_dir, launcher_kind(os.environ))

    async def run(self, ctx: UnitContext) -> UnitOutcome:
        if not sdk_installed():
            return UnitOutcome.failure(f"claude-agent-sdk is not installed: {INSTALL_HINT}", ErrorClass.permanent,
                                       FailureKind.setup)
        if problem := missing_auth(os.environ):
            return UnitOutcome.failure(problem, ErrorClass.permanent, FailureKind.auth)
        if not ctx.prompt:
            return UnitOutcome.failure("the claude worker needs a prompt", ErrorClass.permanent, FailureKind.setup)

        from agentic_batch.config import load_settings
        from agentic_batch.workers.claude_process import (
            CliProcessGroup,
            ensure_wrapper,
            launcher_kind,
            resolve_cli,
            supports_process_groups,
        )

        real_cli = resolve_cli(self.options.cli_path)
        if real_cli is None:
            return UnitOutcome.failure(f"Claude Code CLI not found; {INSTALL_HINT} or set cli_path",
                                       ErrorClass.permanent, FailureKind.setup)
        env = {k: v for k, v in _CLI_ENV_DEFAULTS.items() if k not in os.environ}
        env.update(ctx.processes.child_env())  # the unit's marker: traces tools that leave the CLI's session
        settings = load_settings()
        try:
            env.update(self._private_config(settings.job_dir(ctx.job_id)))
        except OSError as exc:  # a full or read-only disk: as for any other file the attempt needs
            return UnitOutcome.failure(f"cannot prepare the job's Claude Code config dir: {exc}",
                                       ErrorClass.retryable)
        run_dir = settings.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        group = CliProcessGroup(run_dir, ctx.processes)
        cli = real_cli
        if supports_process_groups():
            cli = ensure_wrapper(run_dir, launcher_kind(os.environ))
            env.update(group.launcher_env(real_cli))

        gateway_url = await self._gateway_url(ctx.gate)
        if gateway_url is not None:
            env["ANTHROPIC_BASE_URL"] = gateway_url  # every model call passes the gate there
        else:
            await ctx.gate.before_call(len(ctx.prompt) // 4)
        run = _Run()
        drive = asyncio.create_task(self._drive(ctx, cli, env, run))
        watch = asyncio.create_task(group.watch()) if supports_process_groups() else None

        def end_processes() -> None:
            if watch is not None:
                watch.cancel()
            group.kill()  # background processes the agent left behind die with the unit
            group.forget()

        deferred = False
        try:
            # Not awaited directly, so a cancel reaches us first: we kill the group *before* the SDK's
            # own shutdown, which would otherwise wait seconds for a CLI stuck on a hung request.
            defer = ctx.defer_exit
            if defer is None:
                await asyncio.wait({drive})
            else:
                result_seen = asyncio.create_task(run.result_seen.wait())
                try:
                    await asyncio.wait({drive, result_seen}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    result_seen.cancel()
            if drive.done():
                outcome = drive.result()
            else:  # a good result, and the CLI is exiting: the engine may go on while it does
                assert defer is not None
                outcome = self._outcome(run.state, None, run.stderr_tail)
                defer(functools.partial(_finish_exit, drive, end_processes))
                deferred = True
        except asyncio.CancelledError:
            group.kill()
            drive.cancel()
            await _settle(drive, timeout=10)
            raise
        finally:
            if not deferred:
                end_processes()
        if gateway_url is None:
            ctx.gate.after_call(outcome.tokens_in + outcome.tokens_out)
        return outcome

    async def _drive(self, ctx: UnitContext, cli: Path, env: dict[str, str], run: _Run) -> UnitOutcome:
        """Run the query to its end (the CLI's exit), emitting events as messages arrive; never raises.
        Sets `run.result_seen` at a good result that can end the run (see `_Run`)."""
        from claude_agent_sdk import ClaudeSDKError, ResultMessage, SystemMessage, query

        from agentic_batch.workers.claude_config import CONFIG_DIR_ENV, transcript_path
        from agentic_batch.workers.claude_messages import RunState, events_for, truncate

        def on_stderr(line: str) -> None:
            run.stderr_tail.append(line)
            ctx.emit("stderr", {"line": truncate(line, 4000)})

        state = run.state = RunState()
        error: BaseException | None = None
        try:
            options = self._sdk_options(ctx, cli, env, on_stderr)
            async for message in query(prompt=ctx.prompt or "", options=options):
                for kind, data in events_for(message, state):
                    if isinstance(message, SystemMessage) and message.subtype == "init" and CONFIG_DIR_ENV in env:
                        memory = (message.data.get("memory_paths") or {}).get("auto")
                        found = transcript_path(Path(env[CONFIG_DIR_ENV]), memory, state.session_id,
                                                message.data.get("cwd"))
                        if found is not None:  # where this unit's session transcript is kept
                            data["transcript"] = str(found)
                    ctx.emit(kind, data)
                if isinstance(message, SystemMessage) and message.subtype == "task_started":
                    run.tasks_started = True
                elif isinstance(message, ResultMessage) and not message.is_error and not run.tasks_started:
                    run.result_seen.set()
        except (ClaudeSDKError, OSError, ValueError) as exc:  # ValueError: SDK rejected an option
            error = exc
        return self._outcome(state, error, run.stderr_tail)

    @staticmethod
    def _outcome(state: RunState, error: BaseException | None, stderr_tail: deque[str]) -> UnitOutcome:
        from agentic_batch.workers.claude_messages import usage_tokens

        result = state.result
        if result is None:
            kind: FailureKind | None
            if error is None:
                message, cls, kind = "Claude Code exited without a result", ErrorClass.retryable, FailureKind.crashed
            else:
                message, cls, kind = classify_crash(error, stderr_tail)
            return UnitOutcome.failure(_with_stderr(message, stderr_tail), cls, kind, session_id=state.session_id)
        tokens_in, tokens_out = usage_tokens(result.usage)
        common: dict[str, Any] = {
            "cost_usd": float(result.total_cost_usd or 0.0),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "turns": result.num_turns,
            "session_id": result.session_id or state.session_id,
        }
        if not result.is_error:
            return UnitOutcome(output=result.result or "", **common)
        message, cls, retry_after, kind = classify_result(state)
        return UnitOutcome.failure(_with_stderr(message, stderr_tail), cls, kind, retry_after=retry_after, **common)


class _Run:
    """What `_drive` shares with `run` while the CLI runs.

    `result_seen` is set at a result that is not an error, from a run that started no background task:
    such a result is the unit's outcome whatever the CLI does next (it only flushes its session
    transcript and exits, ~0.1 s), so an executor can record it and start the next unit meanwhile.
    An error result waits for the exit (its message takes the CLI's last stderr lines), and so does a
    run that started tasks: their completion may wake the CLI for another turn, and another result.
    """

    def __init__(self) -> None:
        from agentic_batch.workers.claude_messages import RunState

        self.state = RunState()
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self.result_seen = asyncio.Event()
        self.tasks_started = False


async def _finish_exit(drive: asyncio.Task[UnitOutcome], end_processes: Any, grace: float) -> None:
    """The end of a deferred exit (`UnitContext.defer_exit`): give the CLI `grace` seconds to exit on its
    own (the SDK reads its last output and closes), then kill its group and whatever it left behind, and
    let the SDK's side finish (bounded)."""
    try:
        if grace > 0:
            await asyncio.wait({drive}, timeout=grace)
    except asyncio.CancelledError:
        end_processes()
        drive.cancel()
        raise
    end_processes()
    await _settle(drive, timeout=10)  # the group is dead: the SDK sees the end of its output at once


async def _settle(task: asyncio.Task[Any], timeout: float) -> None:
    """Wait (bounded) for a cancelled task and swallow its outcome, so nothing is left unretrieved."""
    with contextlib.suppress(BaseException):
        await asyncio.wait({task}, timeout=timeout)
    if task.done():
        with contextlib.suppress(BaseException):
            task.exception()
    else:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _build(options: BaseModel) -> ClaudeWorker:
    if not sdk_installed():
        raise InvalidSpec("the claude worker needs claude-agent-sdk", hint=INSTALL_HINT)
    assert isinstance(options, ClaudeOptions)
    return ClaudeWorker(options)


KIND = WorkerKind(
    kind="claude",
    summary="Claude Code (the real CLI, through claude-agent-sdk): an agent with Read/Write/Bash tools per unit",
    options_model=ClaudeOptions,
    factory=_build,
    prompt_required=True,
)
