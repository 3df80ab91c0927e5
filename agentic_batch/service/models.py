"""The read models the service hands every interface: what a job, a unit, an event, a page *is*.

One declaration per answer. The REST routes name these as their `response_model` (so `/openapi.json`
documents every field, type and enum), the MCP tools shape them for a model's context, the CLI reads
their attributes, and the dashboard's templates render them. Their JSON is the REST API's JSON: a
field here is a key there, in this order, `null` included, so adding a field is the one way to change
what every interface sees.

`extra="forbid"`: a key the service does not declare is a bug caught where the model is built, not a
field that appears in one interface and not in the schema.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from pydantic_core import to_jsonable_python

from agentic_batch.states import JobStatus, UnitStatus

T = TypeVar("T")

#: A result row: the unit's number, key, the item's own fields, status, output, data.<field>, error,
#: cost, tokens, attempts. Its columns are the user's data (the item's fields), so it is a mapping.
ResultRow = dict[str, Any]


class ReadModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


def plain(value: Any) -> Any:
    """Read models (or lists and dicts holding them) as plain JSON values, the REST API's JSON: for
    what serialises itself (SSE messages, the dashboard's initial data, MCP results, `--json`)."""
    return to_jsonable_python(value, fallback=str)


# -- jobs -----------------------------------------------------------------------------------------


class JobSummary(ReadModel):
    """A job as a row of a list: counts, progress, rate, ETA, elapsed and cost (see `views.Progress`
    for what each word means); no executor probing."""

    id: int
    job_id: int = Field(description="The same as `id` (every answer about a job names it so).")
    name: str
    status: JobStatus
    worker: str
    total: int
    pending: int
    running: int = Field(description="Units an agent works on now (never above the job's concurrency); for a "
                                     "batch_api job also the units in provider batches (see `batches`).")
    completed: int
    failed: int
    cancelled: int
    cached: int = Field(description="Completed units whose result came from the result cache (at no cost).")
    done: int = Field(description="completed + failed + cancelled.")
    progress: float = Field(description="Percent of the units done.")
    rate: float = Field(description="Completed units per second of working time.")
    eta_seconds: float | None
    elapsed_seconds: float = Field(description="Working time: seconds RUNNING, paused time left out.")
    cost_usd: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    pause_reason: str | None = Field(description="Why a PAUSED job paused (stopped, budget, store, ...).")


class ExecutorInfo(ReadModel):
    """One executor process of a job."""

    id: str
    host: str
    pid: int
    state: Literal["running", "stopped", "lost"]
    started_at: float
    heartbeat_at: float
    units_done: int | None = Field(description="Units it completed (while it runs).")


class ExecutorView(ReadModel):
    """The job's executors: the head one's state (the first live one, else the newest) and the list."""

    state: Literal["not_started", "running", "stopped", "lost"]
    pid: int | None
    host: str | None
    heartbeat_at: float | None
    id: str | None
    executors: list[ExecutorInfo]


class ReduceView(ReadModel):
    """The job's post-processing (reduce) step."""

    status: str | None
    output: str | None
    error: str | None


class BatchView(ReadModel):
    """One provider batch of a `batch_api` job."""

    id: int = Field(description="The batch's number in this store.")
    provider_id: str | None = Field(description="The provider's batch id (null until the create call returned).")
    status: str = Field(description="The provider's own status word (validating, in_progress, ...), or `intent` "
                                    "before the provider answered.")
    units: int
    counts: dict[str, int] = Field(description="The provider's request counts: succeeded, errored, processing, "
                                               "total.")
    projected_usd: float = Field(description="Its projected cost at the batch price.")
    age_seconds: float = Field(description="Seconds since it was submitted (or written, before that).")


class BatchesView(ReadModel):
    """A `batch_api` job's provider batches in flight (units in them show as running)."""

    in_flight: int = Field(description="Batches not finished and applied yet.")
    units: int = Field(description="Units in those batches.")
    projected_usd: float = Field(description="Their projected cost at the batch price.")
    submitted: int = Field(description="Batches submitted over the job's life.")
    batches: list[BatchView] = Field(description="The batches in flight, newest first (at most 20).")


class JobDetails(JobSummary):
    """A job's summary plus cost projection and options (`JobView` adds its executors)."""

    projected_cost_usd: float | None
    budget_usd: float | None
    tokens_in: int
    tokens_out: int
    concurrency: int
    max_retries: int
    timeout_s: float
    priority: str | int
    max_output_bytes: int
    cache: bool = Field(description="The result cache is on (`--cache`).")
    hold_until: float | None = Field(description="A quota hold: no unit starts before this time.")
    test_unit: int | None = Field(description="The number of the unit the test run used.")
    reduce: ReduceView | None
    batches: BatchesView | None = Field(default=None, description="batch_api jobs: provider batches in flight.")


class JobView(JobDetails):
    """Everything about one job: the summary plus cost projection, options and executors."""

    executor: ExecutorView


class RunPlan(ReadModel):
    """What a start, approve, retry or resume found before the executor began: the units the result
    cache completed, and what is left to run and may cost (at this job's cost per unit so far, else at
    what the cached units cost when they ran)."""

    cached: int = Field(description="Units completed from the result cache by this call, at no cost.")
    unchanged: int = Field(description="Completed units kept because their rendered prompt did not change "
                                       "(a retry after a prompt edit re-runs only the changed ones).")
    to_run: int = Field(description="Units left to run (pending or running).")
    projected_cost_usd: float | None = Field(description="What the units left to run may cost; null when "
                                                         "nothing is known yet.")


class StartedJob(JobView):
    """A job an executor was started for (start, approve, resume): its status and the run's plan."""

    plan: RunPlan


class RetriedJob(StartedJob):
    """A job after `retry`: its status, the run's plan and how many units went back to PENDING."""

    retried: int


class RunningJobRow(JobDetails):
    """A RUNNING job in a jobs page: the full status, its executor's state flattened."""

    executor: None = None
    executor_state: str


class JobRow(JobSummary):
    """A job that is not RUNNING in a jobs page: the summary."""

    executor_state: None = None


class Page(ReadModel, Generic[T]):
    """One page of a list, and how many rows match in all."""

    items: list[T]
    total: int
    limit: int
    offset: int


class JobsPage(Page[RunningJobRow | JobRow]):
    pass


class CreatedJob(ReadModel):
    """What `create` made: the job, its units, and the prompt it will use."""

    job_id: int
    name: str
    units: int
    duplicates: int = Field(description="Items skipped because their key was already there.")
    source: str
    prompt_template: str | None
    synthesized: bool = Field(description="The prompt was written from the intent.")
    previews: list[str] = Field(default_factory=list, description="The prompt rendered for the first items.")
    same_name_jobs: list[int] = Field(default_factory=list, description="Other jobs with the same name.")
    warnings: list[str] = Field(default_factory=list, description="What the user should know that does not stop "
                                                                  "the job (uncommitted changes outside the base).")


class SyncResult(ReadModel):
    job_id: int
    added: int
    existing: int
    status: JobStatus
    next: Literal["resume", "retry", "start", "approve"] | None = Field(
        description="What runs the new units, when there are some.")


class AddedUnits(ReadModel):
    """What `add` did: units added, items skipped as duplicates, and what runs the new units."""

    job_id: int
    added: int = Field(description="New units (items whose key the job did not have).")
    duplicates: int = Field(description="Items skipped: the job already had their key, or an earlier item "
                                        "of the same call gave it.")
    status: JobStatus = Field(description="The job's status after the call.")
    started: bool = Field(description="The call set the job RUNNING (`start`).")
    next: Literal["resume", "retry", "start", "approve"] | None = Field(
        description="What runs the new units, when nothing does yet.")


class ExportResult(ReadModel):
    job_id: int
    path: str
    format: Literal["csv", "json", "jsonl"]
    rows: int


class ResultsPage(ReadModel):
    """Result rows `offset`.. in unit order, and how many match the filter in all."""

    job_id: int
    job_status: JobStatus
    total: int
    offset: int
    returned: int
    next_offset: int | None
    rows: list[ResultRow]


class Stats(ReadModel):
    """Totals across every job."""

    jobs: dict[JobStatus, int]
    jobs_total: int
    units: dict[UnitStatus, int]
    units_total: int
    cost_usd: float
    tokens_in: int
    tokens_out: int
    rate: float = Field(description="Units finished per second over the last minute.")


class TimePoint(ReadModel):
    t: float
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    cost_total: float = 0.0


class Timeseries(ReadModel):
    job_id: int
    start: float | None
    end: float | None
    width: float | None
    points: list[TimePoint]


# -- units, events, logs --------------------------------------------------------------------------


class EventView(ReadModel):
    """One event of a conversation; `unit` is the unit's number (null for the job's reduce step)."""

    id: int
    unit: int | None
    attempt: int
    seq: int
    ts: float
    kind: str
    data: dict[str, Any]


class LogLine(ReadModel):
    """One log line; `unit` is the unit's number."""

    id: int
    ts: float
    level: str
    message: str
    unit: int | None
    executor_id: str | None
    extra: dict[str, Any] | None


class UnitSource(ReadModel):
    """The unit a cached unit's result was copied from: the one that ran."""

    job_id: int
    unit: int = Field(description="Its number within that job.")


class UnitView(ReadModel):
    """A unit as users see it: named by its number within the job (the global id stays internal)."""

    number: int
    job_id: int
    key: str
    priority: int
    status: UnitStatus
    attempts: int
    errors: int
    payload: dict[str, Any]
    prompt: str | None
    output: str | None
    data: Any
    error: str | None
    error_class: str | None
    cost_usd: float
    tokens_in: int
    tokens_out: int
    turns: int
    session_id: str | None
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    not_before: float | None
    lease_owner: str | None
    exit_code: int | None = Field(default=None, description="A command unit's exit code (negative: killed by that "
                                                            "signal); null for other workers.")
    stdout: str | None = Field(default=None, description="A command unit's stdout as captured (`output` is it "
                                                         "without its last newline).")
    stderr: str | None = Field(default=None, description="A command unit's stderr as captured.")
    cached_from: UnitSource | None = Field(description="Set when the result came from the result cache: the "
                                                       "unit that ran (its job and number).")


class UnitDetail(UnitView):
    """A unit with its conversation (every attempt's events)."""

    events: list[EventView]


class UnitRow(ReadModel):
    """A light row of the units table: output and error cut to a preview."""

    number: int
    job_id: int
    seq: int
    key: str
    priority: int
    status: UnitStatus
    attempt: int
    error_count: int
    error_class: str | None
    cost_usd: float
    tokens_in: int
    tokens_out: int
    turns: int
    started_at: float | None
    finished_at: float | None
    output_preview: str | None
    error_preview: str | None
    duration_s: float | None
    cached_from: UnitSource | None = Field(default=None, description="The unit a cached result came from.")


class UnitsPage(Page[UnitRow]):
    job_id: int
    sort: str
    order: Literal["asc", "desc"]


class UnitAndJob(ReadModel):
    """A unit after a per-unit action, and its job's status."""

    unit: UnitView
    job: JobView


class UnitFeed(ReadModel):
    """What a live view polls: the running units and those finished since a time."""

    running: list[UnitRow]
    finished: list[UnitRow]


class ActiveUnit(ReadModel):
    """A unit running now, with its newest event (what the agent is doing)."""

    number: int
    key: str
    attempt: int
    elapsed_s: float | None
    last_event: EventView | None


class LogsPage(ReadModel):
    """Newest log lines first; `next_before` pages to older ones."""

    job_id: int
    items: list[LogLine]
    next_before: int | None


class LogsTail(ReadModel):
    """Log lines oldest first from an id on (to follow a job); `next_after` reads on."""

    job_id: int
    items: list[LogLine]
    next_after: int


class EventsPage(ReadModel):
    """Events in id order; pass `next_after` back as `after` to read on; `more`: a full page came."""

    items: list[EventView]
    next_after: int
    more: bool


# -- what can be created: source and worker kinds (MCP list_sources) -----------------------------


class Sparse(ReadModel):
    """A catalogue entry: a field that was not given is left out of the JSON (not `null`)."""

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {name: value for name, value in data.items() if name in self.model_fields_set}


class SourceFieldInfo(ReadModel):
    required: bool
    description: str


class SourceKindInfo(ReadModel):
    """A source kind: what its items are and the fields it takes."""

    kind: str
    items: str
    fields: dict[str, SourceFieldInfo]


class WorkerOptionInfo(Sparse):
    """A worker option, from the kind's options model: its type, whether it is required, its
    default (when it has one) and its description (when it has one)."""

    type: str
    required: bool
    default: Any = None
    description: str | None = None


class WorkerKindInfo(Sparse):
    """A worker kind with its options, or (when its module cannot load) why it is unavailable."""

    kind: str
    available: bool
    error: str | None = None
    summary: str | None = None
    prompt_required: bool | None = None
    options: dict[str, WorkerOptionInfo] | None = None


class CapabilitiesBrief(ReadModel):
    """One line per source kind and per worker kind."""

    sources: dict[str, str]
    source_fields_for_all: str
    workers: dict[str, str]
    legend: str
    details: str


class CapabilityDetails(Sparse):
    """One kind in full: a source kind, a worker kind, or both (`python` is both)."""

    source: SourceKindInfo | None = None
    worker: WorkerKindInfo | None = None


# -- test runs ------------------------------------------------------------------------------------


class TestUnderWay(ReadModel):
    """A test run is executing the job's first unit now."""

    __test__ = False  # not a pytest test class
    state: Literal["running"]
    job_id: int
    unit: int | None
    pid: int
    host: str
    elapsed_s: float


class TestSettled(ReadModel):
    """No test run executes now: `done` (the job is TESTING, a result waits) or `none`."""

    __test__ = False
    state: Literal["done", "none"]
    job_id: int
    status: JobStatus
    unit: int | None


TestProgress = TestUnderWay | TestSettled


# -- recovery after a reboot ----------------------------------------------------------------------


class ResumedJob(ReadModel):
    """What `resume --all` did with one RUNNING job."""

    job_id: int
    name: str
    outcome: Literal["resumed", "running", "skipped"] = Field(
        description="resumed: a new executor works on it; running: an executor was alive already; skipped: "
                    "it could not be resumed (see `reason`).")
    pid: int | None = Field(description="The executor working on it (null when skipped).")
    host: str | None = Field(description="Where that executor runs.")
    reason: str | None = Field(description="Why it was skipped, or what was found (units reclaimed).")


class ResumeAllReport(ReadModel):
    """Every job that was RUNNING when `resume --all` looked, and what happened to each."""

    jobs: list[ResumedJob]
    resumed: int
    running: int
    skipped: int


class BootUnit(ReadModel):
    """The systemd user unit that runs `abp resume --all` at boot (`abp service install|show`)."""

    path: str
    written: bool
    replaced: bool = Field(description="A unit was there already (the same, or replaced with --force).")
    enabled: bool
    unit: str = Field(description="The unit file's text.")
    crontab: str = Field(description="The @reboot crontab line that does the same without systemd.")
    next_steps: list[str] = Field(description="Commands left for the user to run.")


# -- failures grouped by cause --------------------------------------------------------------------


class ErrorExampleUnit(ReadModel):
    number: int
    key: str


class ErrorGroup(ReadModel):
    """Failed units that failed the same way: same class, kind and signature."""

    group: int = Field(description="The group's number (1 = the largest): `abp retry JOB --error N`, "
                                   "`error_group` on REST and MCP.")
    count: int
    error_class: str | None = Field(description="retryable, quota or permanent: what the retry loop did.")
    error_kind: str | None = Field(description="What went wrong as data (timeout, exit_status, rate_limited, ...) "
                                               "when the worker could tell.")
    signature: str | None = Field(description="The error with numbers, paths, ids, hex, UUIDs and quoted "
                                              "values masked (<n>, <path>, <str>, ...).")
    example: str | None = Field(description="The full error of the group's first unit.")
    units: list[ErrorExampleUnit] = Field(description="The group's first units (number and key).")


class ErrorSummary(ReadModel):
    """A job's FAILED units grouped by cause, largest group first."""

    job_id: int
    failed: int
    groups: list[ErrorGroup]


# -- the detached dashboard -----------------------------------------------------------------------


class DashboardInfo(ReadModel):
    """The background dashboard (`abp serve --detach|--status|--stop`, MCP open_dashboard/stop_dashboard)."""

    running: bool
    url: str | None = Field(description="Where to open it (a wildcard bind is given as loopback).")
    pid: int | None
    host: str | None
    port: int | None
    started_at: float | None
    token_required: bool = Field(description="It was started with a token: log in with it, or send it as "
                                             "`Authorization: Bearer`.")
    log: str = Field(description="Its output goes to this file.")
    started: bool = Field(description="This call started it.")
    stopped: bool = Field(description="This call stopped it.")
    note: str | None = Field(description="Something to know: a stale pid file removed, or it already runs "
                                         "elsewhere than asked.")
    job_url: str | None = Field(default=None, description="The page of the job asked about.")
