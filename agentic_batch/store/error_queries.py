"""Failed units grouped by cause: (error class, error kind, error signature), counted per job.

One GROUP BY over the `ix_units_job_error` index (job, status, signature), then a few example units
per group; never a read of every error's text (see error_signature.py for why it is stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from agentic_batch.states import UnitStatus
from agentic_batch.store.db import Queries
from agentic_batch.store.schema import units


@dataclass(frozen=True, slots=True)
class ErrorGroupKey:
    """What failed units of one group share."""

    error_class: str | None
    error_kind: str | None
    signature: str | None

    def matches(self) -> list[Any]:
        """WHERE clauses selecting the units of this group (NULL matching NULL)."""
        return [units.c.error_class.is_not_distinct_from(self.error_class),
                units.c.error_kind.is_not_distinct_from(self.error_kind),
                units.c.error_signature.is_not_distinct_from(self.signature)]


@dataclass(frozen=True, slots=True)
class ErrorGroupRow:
    key: ErrorGroupKey
    count: int
    first_number: int


@dataclass(frozen=True, slots=True)
class ErrorExample:
    number: int
    key: str
    error: str | None


class ErrorQueries(Queries):
    """`store.errors`: failed units grouped by cause."""

    def error_groups(self, job_id: int) -> list[ErrorGroupRow]:
        """Every group of the job's FAILED units, largest first (then by first unit)."""
        count = sa.func.count().label("n")
        first = sa.func.min(units.c.number).label("first")
        query = (sa.select(units.c.error_class, units.c.error_kind, units.c.error_signature, count, first)
                 .where(units.c.job_id == job_id, units.c.status == UnitStatus.FAILED)
                 .group_by(units.c.error_signature, units.c.error_class, units.c.error_kind)
                 .order_by(count.desc(), first))
        with self.database.read() as conn:
            return [ErrorGroupRow(ErrorGroupKey(r.error_class, r.error_kind, r.error_signature), int(r.n), int(r.first))
                    for r in conn.execute(query)]

    def error_examples(self, job_id: int, key: ErrorGroupKey, limit: int) -> list[ErrorExample]:
        """The group's first `limit` units in unit order, with their full error."""
        query = (sa.select(units.c.number, units.c.key, units.c.error)
                 .where(units.c.job_id == job_id, units.c.status == UnitStatus.FAILED, *key.matches())
                 .order_by(units.c.number).limit(limit))
        with self.database.read() as conn:
            return [ErrorExample(int(r.number), r.key, r.error) for r in conn.execute(query)]

    def failed_errors(self, job_id: int, batch_size: int = 5000) -> Any:
        """(number, error, class, kind) of every FAILED unit, streamed: the slow way to group, kept for
        the benchmark that compares it with the stored signatures (bench/error_groups.py)."""
        last = 0
        while True:
            with self.database.read() as conn:
                rows = conn.execute(sa.select(units.c.number, units.c.error, units.c.error_class, units.c.error_kind)
                                    .where(units.c.job_id == job_id, units.c.status == UnitStatus.FAILED,
                                           units.c.number > last)
                                    .order_by(units.c.number).limit(batch_size)).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].number
