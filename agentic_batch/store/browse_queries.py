"""Read queries for browsing: units by the number or key users give, a job's units table (filter,
search, sort, page), time series, stats across jobs, newest-first logs, and the light change feed
that live views poll.

These serve the interfaces (dashboard, REST, MCP), not the engine, and must stay fast on a
100,000-unit job while an executor writes. A page first picks its unit ids through an index that
ends in `id` (`(job_id, seq)`, `(job_id, cost_usd, id)`, `(job_id, duration, id)`, `(job_id, key)`),
then fetches only those rows, and only the light columns (output and error cut to a preview).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from agentic_batch.refs import parse_id
from agentic_batch.store.event_queries import LOG_LEVELS
from agentic_batch.store.db import Queries
from agentic_batch.store.records import LogRecord, UnitRecord, from_mapping
from agentic_batch.store.schema import UNIT_DURATION, events, jobs, logs, units
from agentic_batch.store.storable import storable_text
from agentic_batch.states import JobStatus, UnitStatus

#: Sort keys of the units table and the indexed expression each one orders by.
UNIT_SORTS: dict[str, Any] = {
    "number": units.c.number,
    "seq": units.c.seq,  # the same order as number (kept for old links)
    "key": units.c.key,
    "cost": units.c.cost_usd,
    "duration": UNIT_DURATION,
}
PREVIEW_CHARS = 200

#: The unit a cached unit's result came from.
_ORIGIN = units.alias("origin")
#: A row names its unit by number: the global id stays inside the store.
_LIGHT_COLUMNS = (
    units.c.number, units.c.job_id, units.c.seq, units.c.key, units.c.priority, units.c.status, units.c.attempt,
    units.c.error_count, units.c.error_class, units.c.cost_usd, units.c.tokens_in, units.c.tokens_out,
    units.c.turns, units.c.started_at, units.c.finished_at,
    sa.func.substr(units.c.output, 1, PREVIEW_CHARS).label("output_preview"),
    sa.func.substr(units.c.error, 1, PREVIEW_CHARS).label("error_preview"),
    _ORIGIN.c.job_id.label("cached_from_job"), _ORIGIN.c.number.label("cached_from_unit"),
)
#: The light columns' FROM: a cached unit's row names the unit its result came from.
_LIGHT_FROM = units.outerjoin(_ORIGIN, _ORIGIN.c.id == units.c.cached_from)


def light_unit(row: Any) -> dict[str, Any]:
    """A units-table row as a dict, with the duration derived (it is never stored)."""
    data = dict(row)
    started, finished = data.get("started_at"), data.get("finished_at")
    data["duration_s"] = round(finished - started, 3) if started and finished else None
    data["cost_usd"] = round(float(data["cost_usd"] or 0.0), 6)
    job, number = data.pop("cached_from_job", None), data.pop("cached_from_unit", None)
    data["cached_from"] = {"job_id": job, "unit": number} if job is not None else None
    return data


class BrowseQueries(Queries):
    """Read queries for the interfaces (`store.browse`)."""

    # -- units by what users call them ------------------------------------------------------------

    def unit_by_number(self, job_id: int, number: int) -> UnitRecord | None:
        """A unit of this job by its number (1..N), never by id or key."""
        with self.database.read() as conn:
            row = conn.execute(sa.select(units).where(units.c.job_id == job_id, units.c.number == number)
                               ).mappings().first()
        return from_mapping(UnitRecord, row) if row else None

    def unit_by_key(self, job_id: int, key: str) -> UnitRecord | None:
        """A unit of this job by its key, as the key was stored (see `storable_text`)."""
        with self.database.read() as conn:
            row = conn.execute(sa.select(units).where(units.c.job_id == job_id, units.c.key == storable_text(key))
                               ).mappings().first()
        return from_mapping(UnitRecord, row) if row else None

    def unit_numbers(self, unit_ids: Iterable[int]) -> dict[int, int]:
        """unit id -> its number, to show users the number of units that rows name by id (events, logs)."""
        wanted = sorted({u for u in unit_ids if u is not None})
        found: dict[int, int] = {}
        with self.database.read() as conn:
            for start in range(0, len(wanted), 1000):
                found.update((int(i), int(n)) for i, n in conn.execute(
                    sa.select(units.c.id, units.c.number).where(units.c.id.in_(wanted[start:start + 1000]))))
        return found

    # -- the units table ------------------------------------------------------------------------

    def browse_units(self, job_id: int, *, statuses: Sequence[str] | None = None, search: str | None = None,
                     key: str | None = None, sort: str = "number", descending: bool = False, limit: int = 50,
                     offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page of a job's units (light rows) and how many match in all; `key` matches exactly."""
        conditions: list[Any] = [units.c.job_id == job_id]
        if key is not None:
            conditions.append(units.c.key == key)
        if statuses:
            conditions.append(units.c.status.in_(list(statuses)))
        if search:
            conditions.append(_search_condition(search, self.database.dialect))
        by = UNIT_SORTS[sort]
        order = [by.desc(), units.c.id.desc()] if descending else [by.asc(), units.c.id.asc()]
        page_ids = sa.select(units.c.id).where(*conditions).order_by(*order).limit(limit).offset(offset)
        with self.database.read() as conn:
            rows = conn.execute(
                sa.select(*_LIGHT_COLUMNS).select_from(_LIGHT_FROM).where(units.c.id.in_(page_ids.scalar_subquery())).order_by(*order)
            ).mappings().all()
            total = int(conn.execute(sa.select(sa.func.count()).select_from(units).where(*conditions)).scalar_one())
        return [light_unit(r) for r in rows], total

    def unit_states(self, job_id: int, numbers: Sequence[int]) -> list[dict[str, Any]]:
        """Light rows of these units, by number (a live view asking what became of units it saw running)."""
        if not numbers:
            return []
        with self.database.read() as conn:
            rows = conn.execute(sa.select(*_LIGHT_COLUMNS).select_from(_LIGHT_FROM).where(
                units.c.job_id == job_id, units.c.number.in_(list(numbers)))).mappings().all()
        return [light_unit(r) for r in rows]

    def running_unit_states(self, job_id: int, limit: int = 200) -> list[dict[str, Any]]:
        with self.database.read() as conn:
            rows = conn.execute(sa.select(*_LIGHT_COLUMNS).select_from(_LIGHT_FROM).where(units.c.job_id == job_id,
                                                                 units.c.status == UnitStatus.RUNNING)
                                .order_by(units.c.started_at, units.c.id).limit(limit)).mappings().all()
        return [light_unit(r) for r in rows]

    def finished_unit_states(self, job_id: int, since: float, limit: int = 500) -> list[dict[str, Any]]:
        """Units that ended (completed, failed, cancelled) at or after `since`: the newest `limit`
        of them (a busy job finishes more than a live view shows), oldest first."""
        with self.database.read() as conn:
            rows = conn.execute(sa.select(*_LIGHT_COLUMNS).select_from(_LIGHT_FROM).where(units.c.job_id == job_id,
                                                                 units.c.finished_at >= since)
                                .order_by(units.c.finished_at.desc(), units.c.id.desc()).limit(limit)
                                ).mappings().all()
        return [light_unit(r) for r in reversed(rows)]

    # -- charts and stats -----------------------------------------------------------------------

    def finished_buckets(self, job_id: int, since: float, start: float, width: float) -> list[dict[str, Any]]:
        """Units finished since `since`, per bucket of `width` seconds from `start` (negative before it):
        counts, cost and tokens per status."""
        raw = (units.c.finished_at - start) / width
        # floor() is not built into every SQLite; CAST truncates, which is floor for values >= 0.
        bucket = (sa.func.floor(raw) if self.database.dialect == "postgresql"
                  else sa.cast(raw, sa.Integer)).label("bucket")
        query = (sa.select(bucket, units.c.status, sa.func.count().label("n"),
                           sa.func.coalesce(sa.func.sum(units.c.cost_usd), 0.0).label("cost"),
                           sa.func.coalesce(sa.func.sum(units.c.tokens_in + units.c.tokens_out), 0).label("tokens"))
                 .where(units.c.job_id == job_id, units.c.finished_at >= since)
                 .group_by(bucket, units.c.status))
        with self.database.read() as conn:
            return [{"bucket": int(r.bucket), "status": r.status, "n": int(r.n), "cost": float(r.cost),
                     "tokens": int(r.tokens)} for r in conn.execute(query)]

    def global_counts(self) -> dict[str, Any]:
        """Jobs per status, units per status, and cost/tokens summed over every visible job."""
        visible = sa.select(jobs.c.id).where(jobs.c.status != JobStatus.CREATING).scalar_subquery()
        with self.database.read() as conn:
            job_rows = conn.execute(sa.select(jobs.c.status, sa.func.count()).where(jobs.c.status != JobStatus.CREATING)
                                    .group_by(jobs.c.status)).all()
            unit_rows = conn.execute(
                sa.select(units.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(units.c.cost_usd), 0.0),
                          sa.func.coalesce(sa.func.sum(units.c.tokens_in), 0),
                          sa.func.coalesce(sa.func.sum(units.c.tokens_out), 0))
                .where(units.c.job_id.in_(visible)).group_by(units.c.status)).all()
        return {
            "jobs": {status: int(n) for status, n in job_rows},
            "units": {status: int(n) for status, n, *_ in unit_rows},
            "cost_usd": float(sum(r[2] for r in unit_rows)),
            "tokens_in": int(sum(r[3] for r in unit_rows)),
            "tokens_out": int(sum(r[4] for r in unit_rows)),
        }

    def finished_since_all(self, since: float) -> int:
        """Units of any job that completed or failed since `since` (the overall rate)."""
        with self.database.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                units.c.finished_at >= since, units.c.status.in_([UnitStatus.COMPLETED,
                                                                  UnitStatus.FAILED]))).scalar_one())

    # -- events and logs ------------------------------------------------------------------------

    def last_event_id(self, job_id: int, unit_id: int | None = None) -> int:
        """The newest event id of a job (or unit): where a live view that fell behind jumps to."""
        query = sa.select(sa.func.max(events.c.id)).where(events.c.job_id == job_id)
        if unit_id is not None:
            query = query.where(events.c.unit_id == unit_id)
        with self.database.read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def browse_logs(self, job_id: int, *, min_level: str = "debug", unit_id: int | None = None,
                    text: str | None = None, before: int | None = None, limit: int = 100) -> list[LogRecord]:
        """Newest logs first, paged backwards with `before` (a log id)."""
        levels = LOG_LEVELS[LOG_LEVELS.index(min_level):] if min_level in LOG_LEVELS else LOG_LEVELS
        query = sa.select(logs).where(logs.c.job_id == job_id, logs.c.level.in_(levels))
        if before is not None:
            query = query.where(logs.c.id < before)
        if unit_id is not None:
            query = query.where(logs.c.unit_id == unit_id)
        if text:
            query = query.where(logs.c.message.icontains(text, autoescape=True) if self.database.dialect == "postgresql"
                                else logs.c.message.contains(text, autoescape=True))
        with self.database.read() as conn:
            rows = conn.execute(query.order_by(logs.c.id.desc()).limit(limit)).mappings()
            return [from_mapping(LogRecord, r) for r in rows]


def _search_condition(text: str, dialect: str) -> Any:
    """Case-insensitive substring match on key, output and error; a number also matches the unit number.

    SQLite's LIKE already ignores ASCII case (lower() would only slow the scan); PostgreSQL has ILIKE.
    """
    needle = text.strip()

    def match(column: Any) -> Any:
        if dialect == "postgresql":
            return column.icontains(needle, autoescape=True)
        return column.contains(needle, autoescape=True)

    cond = sa.or_(match(units.c.key), match(units.c.output), match(units.c.error))
    if (number := parse_id(needle)) is not None:
        cond = sa.or_(units.c.number == number, cond)
    return cond
