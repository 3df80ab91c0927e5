"""Queries of the result cache (`store.cache`): fingerprints, the lookup across jobs, cached copies.

A cached unit is completed by copying a COMPLETED unit of another job that has the same fingerprint:
its output and data, at no cost, with `cached_from` naming the unit that actually ran. Every write is
fenced by the unit's status (a PENDING unit an executor claimed meanwhile simply runs), and a page of
units is fingerprinted, looked up and completed in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from agentic_batch.states import UnitStatus
from agentic_batch.store.db import Queries
from agentic_batch.store.schema import units
from agentic_batch.store.storable import storable

#: Fingerprints in one IN (...) list.
_CHUNK = 900
#: What a cached unit copies: the answer (a command unit's exit code and streams with it), never its cost.
ANSWER_COLUMNS = ("output", "data", "exit_code", "stdout", "stderr")


@dataclass(slots=True)
class CacheHit:
    """A completed unit whose result another unit may copy; `origin` is the unit that ran."""

    origin: int
    answer: dict[str, Any]


@dataclass(slots=True)
class Fingerprinted:
    """A unit with its fingerprint now (None: it has none) and its prompt as rendered for it."""

    unit_id: int
    fingerprint: str | None
    prompt: str | None


_SET_FINGERPRINT = (sa.update(units).where(units.c.id == sa.bindparam("b_id"))
                    .values(fingerprint=sa.bindparam("b_fp", type_=units.c.fingerprint.type)))

_COMPLETE_FROM_CACHE = (
    sa.update(units)
    .where(units.c.id == sa.bindparam("b_id"), units.c.status == UnitStatus.PENDING)
    .values(status=UnitStatus.COMPLETED,
            **{name: sa.bindparam(f"b_{name}", type_=units.c[name].type) for name in ANSWER_COLUMNS},
            prompt=sa.bindparam("b_prompt", type_=units.c.prompt.type),
            cached_from=sa.bindparam("b_origin", type_=sa.Integer), error=None, error_class=None, error_kind=None,
            error_count=0, not_before=None, lease_owner=None, lease_expires_at=None, session_id=None,
            changes=None, patch=None, verify_output=None, turns=0,
            started_at=sa.bindparam("b_now", type_=sa.Float), finished_at=sa.bindparam("b_now", type_=sa.Float))
)

_REQUEUE = (
    sa.update(units)
    .where(units.c.id == sa.bindparam("b_id"), units.c.status == UnitStatus.COMPLETED)
    .values(status=UnitStatus.PENDING, fingerprint=sa.bindparam("b_fp", type_=units.c.fingerprint.type),
            **dict.fromkeys(ANSWER_COLUMNS), cached_from=None, error=None, error_class=None, error_kind=None,
            error_count=0, not_before=None, lease_owner=None, lease_expires_at=None, finished_at=None)
)


class CacheQueries(Queries):
    """The result cache's reads and writes over the units table."""

    def complete_page(self, job_id: int, page: Sequence[Fingerprinted]) -> list[tuple[int, CacheHit]]:
        """Store the page's fingerprints, then complete each PENDING unit whose fingerprint a COMPLETED
        unit of another job has, from that unit. One transaction. Returns (unit id, hit) per cached unit."""
        if not page:
            return []
        now = time.time()
        with self.database.write() as conn:
            conn.execute(_SET_FINGERPRINT, [{"b_id": u.unit_id, "b_fp": u.fingerprint} for u in page])
            hits = self._lookup(conn, job_id, {u.fingerprint for u in page if u.fingerprint})
            cached = [(u, hits[u.fingerprint]) for u in page if u.fingerprint in hits]
            if not cached:
                return []
            conn.execute(_COMPLETE_FROM_CACHE, [
                {"b_id": u.unit_id, **{f"b_{name}": value for name, value in hit.answer.items()},
                 "b_prompt": storable(u.prompt), "b_origin": hit.origin, "b_now": now} for u, hit in cached])
            done = {row[0] for row in conn.execute(
                sa.select(units.c.id).where(units.c.id.in_([u.unit_id for u, _ in cached]),
                                            units.c.cached_from.is_not(None),
                                            units.c.status == UnitStatus.COMPLETED))}
        return [(u.unit_id, hit) for u, hit in cached if u.unit_id in done]

    def _lookup(self, conn: sa.Connection, job_id: int, fingerprints: Iterable[str]) -> dict[str, CacheHit]:
        """For each fingerprint, the newest COMPLETED unit of another job that has it."""
        wanted = list(fingerprints)
        newest: dict[str, int] = {}
        for start in range(0, len(wanted), _CHUNK):
            newest.update((fp, unit_id) for fp, unit_id in conn.execute(
                sa.select(units.c.fingerprint, sa.func.max(units.c.id))
                .where(units.c.fingerprint.in_(wanted[start:start + _CHUNK]),
                       units.c.status == UnitStatus.COMPLETED, units.c.job_id != job_id)
                .group_by(units.c.fingerprint)))
        by_id = {unit_id: fp for fp, unit_id in newest.items()}
        hits: dict[str, CacheHit] = {}
        ids = list(by_id)
        for start in range(0, len(ids), _CHUNK):
            answer = [units.c[name] for name in ANSWER_COLUMNS]
            for row in conn.execute(sa.select(units.c.id, units.c.cached_from, *answer)
                                    .where(units.c.id.in_(ids[start:start + _CHUNK]))).mappings():
                hits[by_id[row["id"]]] = CacheHit(origin=row["cached_from"] or row["id"],
                                                  answer={name: row[name] for name in ANSWER_COLUMNS})
        return hits

    def requeue_changed(self, rows: Sequence[tuple[int, str | None]]) -> int:
        """COMPLETED units whose fingerprint changed (the prompt was edited) back to a fresh PENDING,
        carrying their new fingerprint. Cost and attempts stay (they were spent)."""
        if not rows:
            return 0
        with self.database.write() as conn:
            return conn.execute(_REQUEUE, [{"b_id": unit_id, "b_fp": fp} for unit_id, fp in rows]).rowcount

    def forget_fingerprints(self, job_id: int) -> int:
        """After a prompt edit: the fingerprints of the job's units that have not completed no longer say
        what they will be asked (the next start, retry or resume computes them again)."""
        with self.database.write() as conn:
            return conn.execute(
                sa.update(units).where(units.c.job_id == job_id, units.c.status != UnitStatus.COMPLETED,
                                       units.c.fingerprint.is_not(None)).values(fingerprint=None)).rowcount

    def cached_count(self, job_id: int) -> int:
        """The job's units completed from the cache."""
        with self.database.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                units.c.job_id == job_id, units.c.cached_from.is_not(None))).scalar_one())

    def cost_basis(self, job_id: int) -> tuple[float, int, float, int]:
        """What a unit of this job costs to run: (cost, count) of its finished units that ran, and
        (cost, count) of the units its cached units came from (what they cost when they ran)."""
        origin = units.alias("origin")
        with self.database.read() as conn:
            ran = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(units.c.cost_usd), 0.0), sa.func.count())
                               .where(units.c.job_id == job_id, units.c.cached_from.is_(None),
                                      units.c.status.in_([UnitStatus.COMPLETED, UnitStatus.FAILED]))).one()
            copied = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(origin.c.cost_usd), 0.0), sa.func.count())
                                  .select_from(units.join(origin, origin.c.id == units.c.cached_from))
                                  .where(units.c.job_id == job_id)).one()
        return float(ran[0]), int(ran[1]), float(copied[0]), int(copied[1])

    def origins(self, unit_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """Units by id -> (job id, unit number): where cached units' results came from."""
        ids = sorted(set(unit_ids))
        found: dict[int, tuple[int, int]] = {}
        with self.database.read() as conn:
            for start in range(0, len(ids), _CHUNK):
                for row in conn.execute(sa.select(units.c.id, units.c.job_id, units.c.number)
                                        .where(units.c.id.in_(ids[start:start + _CHUNK]))):
                    found[row.id] = (row.job_id, row.number)
        return found
