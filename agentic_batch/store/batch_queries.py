"""Queries on provider batches (`store.batches`): the intent row, leasing units to a batch, progress.

A unit in a live batch is RUNNING with `lease_owner = batch:<id>` and a lease far in the future: no
claim takes it (the lease never expires while the batch lives), no dead-executor reclaim touches it
(the owner is no executor), and the claim's concurrency count leaves it out (no agent of ours runs it).
Its result is applied fenced by that owner and the attempt, exactly like an online result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from agentic_batch.states import UnitStatus
from agentic_batch.store.db import Queries
from agentic_batch.store.records import LIVE_STATES, BatchRecord, UnitRecord, batch_owner, from_mapping
from agentic_batch.store.schema import batches, units

#: A batch unit's lease: longer than any provider's window (24 h) plus a long pause of the job; the
#: batch loop gives the units back itself when the batch ends.
BATCH_LEASE_SECONDS = 400 * 24 * 3600.0

_UNIT_COLUMNS = (units.c.id, units.c.job_id, units.c.seq, units.c.number, units.c.priority, units.c.key,
                 units.c.payload, units.c.status, units.c.attempt, units.c.error_count, units.c.error,
                 units.c.error_kind)


class BatchQueries(Queries):

    def open_batch(self, job_id: int, provider: str, limit: int,
                   now: float | None = None) -> tuple[BatchRecord, list[UnitRecord]] | None:
        """The intent row and up to `limit` runnable units leased to it, in ONE transaction (so a unit
        is either pending or in exactly one recorded batch). None when nothing is runnable."""
        now = time.time() if now is None else now
        with self.database.write(savepoint=False) as conn:
            batch_id = conn.execute(sa.insert(batches).values(
                job_id=job_id, provider=provider, tag="", state="intent", created_at=now, updated_at=now)
                .returning(batches.c.id)).scalar_one()
            # the random part keeps two stores on one provider account from adopting each other's batches
            tag = f"abp-j{job_id}-b{batch_id}-{uuid.uuid4().hex[:8]}"
            pick = (sa.select(units.c.id)
                    .where(units.c.job_id == job_id, units.c.status == UnitStatus.PENDING,
                           sa.or_(units.c.not_before.is_(None), units.c.not_before <= now))
                    .order_by(units.c.priority.desc(), units.c.seq).limit(limit))
            if self.database.dialect == "postgresql":
                pick = pick.with_for_update(skip_locked=True, of=units)
            rows = conn.execute(
                sa.update(units).where(units.c.id.in_(pick.scalar_subquery()))
                .values(status=UnitStatus.RUNNING, lease_owner=batch_owner(batch_id),
                        lease_expires_at=now + BATCH_LEASE_SECONDS, attempt=units.c.attempt + 1, started_at=now,
                        not_before=None)
                .returning(*_UNIT_COLUMNS)).mappings().all()
            if not rows:
                conn.execute(sa.delete(batches).where(batches.c.id == batch_id))
                return None
            conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(tag=tag, units=len(rows)))
            record = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().one()
        leased = sorted((from_mapping(UnitRecord, r) for r in rows), key=lambda u: (-u.priority, u.seq))
        return from_mapping(BatchRecord, record), leased

    def update_batch(self, batch_id: int, **values: Any) -> None:
        values.setdefault("updated_at", time.time())
        with self.database.write() as conn:
            conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(**values))

    def get_batch(self, batch_id: int) -> BatchRecord | None:
        with self.database.read() as conn:
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().first()
        return from_mapping(BatchRecord, row) if row else None

    def list_batches(self, job_id: int, live_only: bool = False, limit: int | None = None) -> list[BatchRecord]:
        """The job's batches, newest first."""
        query = sa.select(batches).where(batches.c.job_id == job_id).order_by(batches.c.id.desc())
        if live_only:
            query = query.where(batches.c.state.in_(LIVE_STATES))
        if limit is not None:
            query = query.limit(limit)
        with self.database.read() as conn:
            return [from_mapping(BatchRecord, r) for r in conn.execute(query).mappings()]

    def leased_units(self, batch_id: int) -> list[UnitRecord]:
        """The units still leased to the batch (RUNNING under its owner), in submission order."""
        with self.database.read() as conn:
            rows = conn.execute(sa.select(*_UNIT_COLUMNS).where(
                units.c.lease_owner == batch_owner(batch_id), units.c.status == UnitStatus.RUNNING)
                .order_by(units.c.priority.desc(), units.c.seq)).mappings().all()
        return [from_mapping(UnitRecord, r) for r in rows]

    def units_by_id(self, unit_ids: Sequence[int]) -> dict[int, UnitRecord]:
        if not unit_ids:
            return {}
        with self.database.read() as conn:
            rows = conn.execute(sa.select(*_UNIT_COLUMNS, units.c.lease_owner)
                                .where(units.c.id.in_(list(unit_ids)))).mappings().all()
        return {r["id"]: from_mapping(UnitRecord, r) for r in rows}

    def owners(self, unit_ids: Sequence[int]) -> dict[int, str | None]:
        """Each unit's lease owner (the batch loop's fence check before it builds a result)."""
        if not unit_ids:
            return {}
        with self.database.read() as conn:
            return {r.id: r.lease_owner for r in conn.execute(
                sa.select(units.c.id, units.c.lease_owner).where(units.c.id.in_(list(unit_ids)),
                                                                 units.c.status == UnitStatus.RUNNING))}

    def batch_totals(self, job_id: int) -> dict[str, float]:
        """Units in live batches and their projected cost (the budget counts it before spending it)."""
        with self.database.read() as conn:
            row = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(batches.c.projected_usd), 0.0),
                                         sa.func.coalesce(sa.func.sum(batches.c.units), 0))
                               .where(batches.c.job_id == job_id, batches.c.state.in_(LIVE_STATES))).one()
        return {"batches": int(row[0]), "projected_usd": float(row[1]), "units": int(row[2])}

    def count_submitted(self, job_id: int) -> int:
        """Batches of the job that reached the provider, over its life."""
        with self.database.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                batches.c.job_id == job_id, batches.c.provider_id.is_not(None))).scalar_one())
