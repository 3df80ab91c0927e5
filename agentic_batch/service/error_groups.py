"""Failed units grouped by cause (`abp errors`, `GET /api/jobs/JOB/errors`, MCP `get_error_summary`,
the job page's panel), and retrying one group (`abp retry JOB --error N`).

A group is the failed units with the same error class, error kind and error signature (the error
with what varies between units masked; see `agentic_batch.error_signature`). Groups are numbered
1.. from the largest; the number is what a user reads in the summary and gives back to retry, so
retry resolves it against the groups as they are at that moment and says so if there is no such group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentic_batch.errors import IllegalState, InvalidSpec, field_ref
from agentic_batch.service.models import ErrorExampleUnit, ErrorGroup, ErrorSummary
from agentic_batch.store.error_queries import ErrorGroupKey

if TYPE_CHECKING:
    from agentic_batch.store import JobRecord, Store

#: Example units listed per group; groups listed at most (the rest are summed into the last line's note).
MAX_EXAMPLES = 20
MAX_GROUPS = 200


class ErrorGroupsMixin:
    """Needs `store` and `job()` from `Orchestrator`."""

    store: Store

    if TYPE_CHECKING:
        def job(self, ref: str | int) -> JobRecord: ...

    def error_summary(self, ref: str | int, examples: int = 3, limit: int = 50) -> ErrorSummary:
        """The job's FAILED units grouped by cause, largest first, with `examples` units of each."""
        job = self.job(ref)
        if not 0 <= examples <= MAX_EXAMPLES:
            raise InvalidSpec(f"{field_ref('examples')} must be between 0 and {MAX_EXAMPLES}")
        if not 1 <= limit <= MAX_GROUPS:
            raise InvalidSpec(f"{field_ref('limit')} must be between 1 and {MAX_GROUPS}")
        rows = self.store.errors.error_groups(job.id)
        groups = []
        for number, row in enumerate(rows[:limit], 1):
            found = self.store.errors.error_examples(job.id, row.key, max(examples, 1))
            groups.append(ErrorGroup(group=number, count=row.count, error_class=row.key.error_class,
                                     error_kind=row.key.error_kind, signature=row.key.signature,
                                     example=found[0].error if found else None,
                                     units=[ErrorExampleUnit(number=e.number, key=e.key) for e in found[:examples]]))
        return ErrorSummary(job_id=job.id, failed=sum(r.count for r in rows), groups=groups)

    def error_group_key(self, job: JobRecord, group: int) -> ErrorGroupKey:
        """Group `group` (1 = the largest) of the job's failed units as they are now."""
        if isinstance(group, bool) or not isinstance(group, int) or group < 1:
            raise InvalidSpec(f"{field_ref('error_group')} must be a group number from `errors` (1, 2, ...)")
        rows = self.store.errors.error_groups(job.id)
        if not rows:
            raise IllegalState(f"job {job.id} has no failed units")
        if group > len(rows):
            raise InvalidSpec(f"job {job.id} has {len(rows)} error group{'s' if len(rows) > 1 else ''}; "
                              f"{field_ref('error_group')} {group} is not one of them",
                              hint=f"see `abp errors {job.id}`")
        return rows[group - 1].key
