"""Plain records the store returns, so no caller depends on SQLAlchemy row objects."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from agentic_batch.attempts import AttemptFields

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def from_mapping(cls: type[T], mapping: Any) -> T:
    names = _field_names(cls)
    return cls(**{k: v for k, v in mapping.items() if k in names})


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    """The fields of a record class (`dataclasses.fields` walks them anew on every call: a third of a
    100,000-unit export's time when it ran once per row)."""
    return frozenset(f.name for f in dataclasses.fields(cls))


@dataclass(slots=True)
class JobRecord:
    id: int
    name: str
    status: str
    source: dict[str, Any]
    prompt_template: str | None
    intent: str | None
    worker: str
    worker_options: dict[str, Any]
    concurrency: int
    max_retries: int
    timeout_s: float
    priority: int
    budget_usd: float | None
    rpm: int | None
    tpm: int | None
    reduce_prompt: str | None
    reduce_status: str | None
    reduce_output: str | None
    reduce_error: str | None
    workdir: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    pause_reason: str | None
    control: str | None
    hold_until: float | None
    test_unit_id: int | None
    creator_pid: int | None = None
    creator_host: str | None = None
    output_schema: dict[str, Any] | None = None
    quota_wait_s: float | None = None
    active_seconds: float = 0.0
    running_since: float | None = None
    max_output_bytes: int | None = None
    isolate: str | None = None
    base: str | None = None
    verify: str | None = None
    require_changes: bool | None = None
    keep_worktrees: bool | None = None
    #: The repository an isolated job's worktrees come from, and the commit they start at.
    repo: str | None = None
    base_commit: str | None = None
    batch_api: bool | None = None
    batch_size: int | None = None
    batch_poll_s: float | None = None
    batch_fallback: str | None = None
    batch_fallback_after_s: float | None = None
    #: The result cache (`--cache`); None for jobs made before it existed: off.
    cache: bool | None = None

    @property
    def isolated(self) -> bool:
        return self.isolate == "worktree"

    def working_seconds(self, now: float) -> float:
        """Seconds this job has spent RUNNING (paused, idle and finished time left out)."""
        current = max(0.0, now - self.running_since) if self.running_since is not None else 0.0
        return (self.active_seconds or 0.0) + current


@dataclass(slots=True)
class UnitRecord(AttemptFields):
    """A unit as stored: its identity, state and lease, and its latest attempt's fields (cost and
    tokens summed over its attempts)."""

    id: int
    job_id: int
    seq: int
    priority: int
    key: str
    payload: dict[str, Any]
    status: str
    attempt: int
    error_count: int
    #: The unit's number within its job (1..N): what every interface shows and accepts.
    number: int = 0
    prompt: str | None = None
    not_before: float | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: An isolated unit's review mark (accepted/rejected) and the commit it was given to.
    review: str | None = None
    reviewed_commit: str | None = None
    #: Result cache: the unit's fingerprint, and the id of the unit whose result it copied.
    fingerprint: str | None = None
    cached_from: int | None = None


@dataclass(slots=True)
class ResultRecord:
    """What a result row (exports, `abp results`) reads of a unit: its identity, its item and its
    latest attempt's outcome; the columns nothing shows (prompt, lease, patch, ...) are not read.
    The field names are `UnitRecord`'s, so a row is made from either."""

    seq: int
    number: int
    key: str
    payload: dict[str, Any]
    status: str
    output: str | None
    data: Any
    error: str | None
    error_class: str | None
    cost_usd: float
    tokens_in: int
    tokens_out: int
    attempt: int
    started_at: float | None
    finished_at: float | None
    cached_from: int | None
    exit_code: int | None
    stdout: str | None
    stderr: str | None


@dataclass(slots=True)
class ExecutorRecord:
    id: str
    job_id: int
    host: str
    pid: int
    pid_start: str | None
    state: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None


@dataclass(slots=True)
class EventRecord:
    id: int
    job_id: int
    unit_id: int | None
    attempt: int
    seq: int
    ts: float
    kind: str
    data: dict[str, Any]


@dataclass(slots=True)
class LogRecord:
    id: int
    job_id: int
    unit_id: int | None
    executor_id: str | None
    level: str
    message: str
    ts: float
    extra: dict[str, Any] | None


@dataclass(slots=True)
class NewUnit:
    """A unit to insert at create time."""

    seq: int
    key: str
    payload: dict[str, Any]
    priority: int = 0
    #: `payload` as the JSON column's text, when the caller serialised it already (`storable_payload`):
    #: a 100,000-unit create then serialises each item once, not again row by row in SQLAlchemy.
    payload_json: str | None = None


@dataclass(slots=True)
class UnitResult(AttemptFields):
    """What the engine writes back for one attempt; applied only if the lease still holds."""

    unit_id: int
    attempt: int
    status: str  # COMPLETED, FAILED or PENDING (retry later)
    prompt: str | None = None
    not_before: float | None = None
    count_error: bool = False
    finished_at: float | None = None


@dataclass(slots=True)
class NewEvent:
    job_id: int
    unit_id: int | None
    attempt: int
    seq: int
    ts: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BatchRecord:
    """One provider batch of a `--batch-api` job (see schema.batches)."""

    id: int
    job_id: int
    provider: str
    tag: str
    provider_id: str | None
    state: str
    provider_status: str | None
    units: int
    counts: dict[str, int] | None
    projected_usd: float
    error: str | None
    created_at: float
    submitted_at: float | None
    updated_at: float
    finished_at: float | None

    @property
    def owner(self) -> str:
        """The lease owner of the batch's units."""
        return batch_owner(self.id)


#: States of a batch whose units are still leased to it (a batch in flight).
LIVE_STATES = ("intent", "validating", "in_progress", "cancelling", "ended", "failed")


def batch_owner(batch_id: int) -> str:
    return f"batch:{batch_id}"
