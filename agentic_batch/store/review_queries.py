"""Queries for reviewing an isolated job's changes (`store.review`): the changes list (one light row
per unit: its stats, never its patch) and the accept/reject marks.

The changes list of a 1,000-unit job is one indexed read of small columns, so `abp diff --stat` and
the dashboard's Changes view stay well under a second; a unit's patch is read only for that unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from agentic_batch.store.db import Queries
from agentic_batch.store.schema import units

#: What a row of the changes list holds.
_CHANGE_COLUMNS = (units.c.number, units.c.key, units.c.status, units.c.attempt, units.c.changes, units.c.review,
                   units.c.reviewed_commit, units.c.error_kind,
                   (units.c.verify_output.is_not(None)).label("verified"))


class ReviewQueries(Queries):
    """Reads and writes for review (`store.review`)."""

    def change_rows(self, job_id: int, numbers: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The job's units in number order (only `numbers`, when given) with their change stats."""
        query = sa.select(*_CHANGE_COLUMNS).where(units.c.job_id == job_id)
        if numbers is not None:
            query = query.where(units.c.number.in_(list(numbers)))
        with self.database.read() as conn:
            return [dict(row) for row in conn.execute(query.order_by(units.c.number)).mappings()]

    def max_number(self, job_id: int) -> int:
        with self.database.read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(units.c.number), 0))
                                    .where(units.c.job_id == job_id)).scalar_one())

    def set_review(self, job_id: int, marks: Mapping[int, str | None], review: str | None) -> int:
        """Mark units (number -> the commit reviewed) `review` (None clears the mark); returns how many."""
        count = 0
        with self.database.write() as conn:
            for number, commit in marks.items():
                count += conn.execute(sa.update(units).where(units.c.job_id == job_id, units.c.number == number)
                                      .values(review=review, reviewed_commit=commit if review else None)).rowcount
        return count
