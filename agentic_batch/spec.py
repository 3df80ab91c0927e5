"""The job spec every interface builds (CLI flags, REST JSON, MCP arguments).

Validation lives here, in Pydantic, so the three interfaces reject the same bad input with the same
words. Paths are made absolute at create time because the executor runs elsewhere, later.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentic_batch.errors import field_ref
from agentic_batch.flags import BATCH_PANEL, ISOLATION_PANEL, PROMPT_PANEL, RUN_PANEL, Flag
from agentic_batch.priority import Priority
from agentic_batch.sources.registry import SourceSpec
from agentic_batch.states import TERMINAL_JOB_STATUSES, JobStatus, UnitStatus  # noqa: F401 (re-exported)
from agentic_batch.textcap import DEFAULT_MAX_OUTPUT_BYTES, MAX_MAX_OUTPUT_BYTES, MIN_MAX_OUTPUT_BYTES

#: Upper bounds of the job's numbers: a week per attempt or quota pause, a million dollars, a million
#: requests and two billion tokens a minute (the store's INTEGER holds it).
MAX_SECONDS = 7 * 24 * 3600.0
MAX_BUDGET_USD = 1_000_000.0
MAX_RPM = 1_000_000
MAX_TPM = 2**31 - 1


class Isolate(StrEnum):
    """Where a unit's agent works: in place (`none`) or in its own git worktree of the job's base."""

    none = "none"
    worktree = "worktree"


class BatchFallback(StrEnum):
    """What `batch_api` does with units still not done after `batch_fallback_after_s`."""

    none = "none"
    online = "online"


#: The most requests one provider batch takes (Anthropic's cap; OpenAI's is 50,000 and the loop applies it).
MAX_BATCH_SIZE = 100_000


class JobSpec(BaseModel):
    """Everything needed to create a job. Worker options are validated by the worker kind.

    Each field is a job option, declared once: REST takes it as is, MCP `create_job` publishes it as an
    argument (see mcp_server/job_tools.py), the CLI makes a flag of every field with a `Flag` (see
    cli/spec_options.py), and creation stores each in the jobs column of the same name.
    """

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Flag(RUN_PANEL, help="A name for the job (shown in lists; `abp status NAME` works when "
                                              "unique).")] = Field(
        min_length=1, max_length=200,
        description="Short name for the job, shown in job lists (a unique name also stands for its id).")
    source: SourceSpec
    prompt: Annotated[str | None, Flag(PROMPT_PANEL, help="Jinja2 template per item: 'Summarise {{ path }}', "
                                                          "'{{ row.title }}'.")] = Field(
        default=None,
        description="Jinja2 template rendered per item: item fields are variables ({{ title }}, {{ row.title }}, "
                    "{{ path }} for files). A misspelt field is an error at create time. Give this or `intent`.")
    intent: Annotated[str | None, Flag(PROMPT_PANEL, help="Say what to do in plain words; abp writes the full "
                                                          "worker prompt (shown before anything runs).")] = Field(
        default=None,
        description="Instead of a template: what to do with each item, in plain words; abp writes the full prompt "
                    "(returned as prompt_template, to show to the user).")
    worker: str = Field(
        default="command",
        description="Worker kind that processes each item: command (run a program per item), python (call a "
                    "function per item), claude (Claude Code agent), openai / anthropic (API model with file "
                    "tools), mcp (one MCP tool call per item).")
    worker_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the chosen worker kind, e.g. command: {\"command\": \"wc -w {{ path }}\"}; python: "
                    "{\"function\": \"/abs/path/mod.py:func\"}; claude: {\"model\": \"sonnet\", \"allowed_tools\": "
                    "[\"Read\", \"Write\"]}; mcp: {\"mcp_config\": \"/abs/servers.json\", \"tool\": "
                    "\"files.read_text_file\", \"arguments\": {\"path\": \"{{ path }}\"}}.")
    # Every number has a finite range the store and the engine can hold (no inf/nan, nothing past
    # the store's INTEGER): one bad number is a one-line error on every interface, never an overflow.
    concurrency: Annotated[int, Flag(RUN_PANEL, help="Units running at once for the whole job, shared by all its "
                                                     "executors (--executors N does not multiply it).")] = Field(
        default=4, ge=1, le=10_000, description="Units running at once for the whole job, shared by all its executors.")
    max_retries: Annotated[int, Flag(RUN_PANEL)] = Field(
        default=3, ge=0, le=100, description="Retries per unit for retryable errors (backoff with jitter).")
    timeout_s: Annotated[float, Flag(RUN_PANEL, name="--timeout")] = Field(
        default=600.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
        description="Seconds per unit attempt; the agent and its children are killed after.")
    priority: Annotated[Priority, Flag(RUN_PANEL)] = Field(
        default=Priority.normal, description="Job priority when executors choose work.")
    budget_usd: Annotated[float | None, Flag(RUN_PANEL)] = Field(
        default=None, gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False,
        description="Stop (PAUSED, reason budget) when the job's cost reaches this.")
    rpm: Annotated[int | None, Flag(RUN_PANEL)] = Field(
        default=None, ge=1, le=MAX_RPM, description="Model requests per minute, for the whole job.")
    tpm: Annotated[int | None, Flag(RUN_PANEL)] = Field(
        default=None, ge=1, le=MAX_TPM, description="Model tokens per minute, for the whole job.")
    reduce_prompt: Annotated[str | None, Flag(PROMPT_PANEL)] = Field(
        default=None, description="Template run once after all units complete; gets {{ results_path }} (a JSONL "
                                  "of all results), {{ total }}, {{ completed }}.")
    output_schema: Annotated[dict[str, Any] | None, Flag(
        PROMPT_PANEL, file=True, help="JSON Schema file: each unit must answer with matching JSON (validated; "
                                      "invalid answers are retried with the error fed back).")] = Field(
        default=None, description="JSON Schema every unit's answer must match (asked for in the prompt, "
                                  "validated; invalid answers are retried with the error fed back).")
    quota_wait_s: Annotated[float, Flag(RUN_PANEL, name="--quota-wait")] = Field(
        default=900.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
        description="Seconds to pause the job on a usage-quota error that gives no reset time.")
    workdir: str | None = Field(
        default=None, description="Absolute directory that relative paths resolve against and commands run in "
                                  "(default: the working directory of the process that creates the job).")
    max_output_bytes: Annotated[int, Flag(RUN_PANEL)] = Field(
        default=DEFAULT_MAX_OUTPUT_BYTES, ge=MIN_MAX_OUTPUT_BYTES, le=MAX_MAX_OUTPUT_BYTES,
        description="Bytes of each unit's output kept in the store; longer output keeps its head and tail, and "
                    "the whole text goes to a file under the job's directory.")

    cache: Annotated[bool, Flag(RUN_PANEL, help="Complete a unit from an earlier job's completed unit with the "
                                                "same fingerprint (worker, model, answer-changing options, "
                                                "rendered prompt, schema, file content), at no cost.")] = Field(
        default=False,
        description="Result cache: a unit whose fingerprint (worker kind, model, every option that changes the answer, "
                    "rendered prompt, output schema, and for a files source the file's content hash) matches a "
                    "COMPLETED unit of an earlier cached job is completed from it at no cost, marked cached with the "
                    "source unit. Off by default: an agent (claude, command) acts on the world, and a cached answer is "
                    "not a fresh sample.")

    isolate: Annotated[Isolate, Flag(ISOLATION_PANEL, help="worktree: each unit's attempt runs in a fresh git "
                                                           "worktree of --base on its own branch; its diff is "
                                                           "the result.")] = Field(
        default=Isolate.none,
        description="none: agents work in place. worktree: each attempt of a unit runs in a fresh git worktree of the "
                    "job's base commit (under ABP_HOME, on branch abp/<job>/<unit>-<key>); what it changed is "
                    "committed there and its patch and stats are the unit's result.")
    base: Annotated[str | None, Flag(ISOLATION_PANEL, metavar="REF", help="Commit, branch or tag the worktrees "
                                                                         "start from (default: HEAD).")] = Field(
        default=None, min_length=1, max_length=256,
        description="With isolate=worktree: the commit, branch or tag every attempt starts from (default: HEAD of "
                    "the repository containing the job's files or working directory), fixed at create time.")
    verify: Annotated[str | None, Flag(ISOLATION_PANEL, metavar="COMMAND", help="argv template run in the worktree "
                                                                               "after the agent, e.g. 'pytest -q "
                                                                               "{{ relative_path }}'; non-zero "
                                                                               "exit retries the unit with its "
                                                                               "output fed back.")] = Field(
        default=None, min_length=1,
        description="With isolate=worktree: an argv template (split with shlex, each token rendered per item, no "
                    "shell) run in the worktree after the agent; a non-zero exit fails the attempt as retryable and "
                    "the next attempt's prompt gets the last lines of its output.")
    require_changes: Annotated[bool, Flag(ISOLATION_PANEL, help="A unit whose agent changed no file fails.")] = Field(
        default=False, description="With isolate=worktree: a unit whose agent changed nothing fails instead of "
                                   "completing with no changes.")
    keep_worktrees: Annotated[bool, Flag(ISOLATION_PANEL, help="Keep each unit's last worktree (under ABP_HOME) "
                                                               "instead of removing it.")] = Field(
        default=False, description="With isolate=worktree: keep each unit's last worktree instead of removing it "
                                   "(its branch is kept either way).")

    batch_api: Annotated[bool, Flag(BATCH_PANEL, help="Send units through the provider's batch API (openai, "
                                                      "anthropic workers): half the price, results within 24 h "
                                                      "instead of seconds. One request per unit, no tools.")] = Field(
        default=False,
        description="openai / anthropic workers: send each unit as one request of a provider batch (OpenAI Batch, "
                    "Anthropic Message Batches), billed at half the online price; results usually arrive within "
                    "minutes to hours (at most 24 h). No tools: each unit is one model request.")
    batch_size: Annotated[int | None, Flag(BATCH_PANEL, help="At most this many units per provider batch (default: "
                                                             "the provider's limit).")] = Field(
        default=None, ge=1, le=MAX_BATCH_SIZE,
        description="With batch_api: at most this many units per provider batch (default and ceiling: the "
                    "provider's limit, 50,000 for OpenAI, 100,000 for Anthropic).")
    batch_poll_s: Annotated[float, Flag(BATCH_PANEL, name="--batch-poll", help="Seconds before the first status "
                                                                               "check of a batch; the interval "
                                                                               "grows to minutes.")] = Field(
        default=30.0, gt=0, le=3600, allow_inf_nan=False,
        description="With batch_api: seconds before a batch's first status check; each check waits 1.5 times "
                    "longer, up to max(300 s, this).")
    batch_fallback: Annotated[BatchFallback, Flag(BATCH_PANEL, help="online: after --batch-fallback-after, cancel "
                                                                    "the batches still running and run the units "
                                                                    "not done online (full price).")] = Field(
        default=BatchFallback.none,
        description="With batch_api: `online` cancels the batches still running after batch_fallback_after_s and "
                    "runs every unit not done through the normal online path (full price); `none` waits.")
    batch_fallback_after_s: Annotated[float, Flag(BATCH_PANEL, name="--batch-fallback-after",
                                                  help="Seconds after the job starts batching before "
                                                       "--batch-fallback online applies.")] = Field(
        default=86_400.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
        description="With batch_fallback=online: seconds after the first batch was submitted before falling back.")

    @field_validator("name")
    @classmethod
    def _strip_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the job name is empty")
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> JobSpec:
        if self.prompt is not None and self.intent is not None:
            raise ValueError(f"give either {field_ref('prompt')} or {field_ref('intent')}, not both")
        if self.isolate is Isolate.none:
            given = [name for name in ISOLATION_OPTIONS if getattr(self, name) not in (None, False)]
            if given:
                raise ValueError(f"{', '.join(field_ref(name) for name in given)} need(s) "
                                 f"{field_ref('isolate')} worktree")
        elif self.cache:
            raise ValueError(f"{field_ref('cache')} does not apply to {field_ref('isolate')} worktree jobs (a unit's "
                             "result is a commit in the job's repository, which a copy would not make)")
        if not self.batch_api:
            given = [name for name, default in BATCH_OPTIONS.items() if getattr(self, name) != default]
            if given:
                raise ValueError(f"{', '.join(field_ref(name) for name in given)} need(s) {field_ref('batch_api')}")
        return self


#: Options that only mean something with `batch_api`, and their defaults.
BATCH_OPTIONS: dict[str, Any] = {"batch_size": None, "batch_poll_s": 30.0, "batch_fallback": BatchFallback.none,
                                 "batch_fallback_after_s": 86_400.0}

#: Options that only mean something with `isolate=worktree`.
ISOLATION_OPTIONS = ("base", "verify", "require_changes", "keep_worktrees")


def job_default(name: str) -> Any:
    """The default of a job option, for jobs stored before the option existed (their column is NULL)."""
    return JobSpec.model_fields[name].get_default(call_default_factory=True)


def describe_validation_error(exc: Exception, prefix: str = "") -> str:
    """One line out of a Pydantic ValidationError; each field is a `field_ref()` reference (its path under
    `prefix`), so every interface names it in its caller's vocabulary."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        path = ".".join(str(p) for p in (prefix, *err.get("loc", ())) if p not in ("", "__root__"))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if path in {"", "source", "worker_options"} or path.split(".")[-1].startswith("_"):
            parts.append(msg)  # a model-level rule: its message names its fields itself
        else:
            parts.append(f"{field_ref(path)}: {msg}")
    return "; ".join(parts)
