"""Queries on the jobs table. State changes are guarded by the expected current status, so two
processes racing on one job (an executor finishing while a user cancels) cannot both win."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from agentic_batch.store.db import Queries
from agentic_batch.store.records import JobRecord, from_mapping
from agentic_batch.store.schema import jobs, units
from agentic_batch.store.storable import storable
from agentic_batch.states import JobStatus


class JobQueries(Queries):
    """Queries on the jobs table (`store.jobs`)."""

    def insert_job(self, **fields: Any) -> int:
        fields = {name: storable(value) for name, value in fields.items()}
        fields.setdefault("created_at", time.time())
        with self.database.write() as conn:
            return int(conn.execute(sa.insert(jobs).values(**fields).returning(jobs.c.id)).scalar_one())

    def get_job(self, job_id: int) -> JobRecord | None:
        with self.database.read() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return from_mapping(JobRecord, row) if row else None

    def find_jobs_by_name(self, name: str) -> list[JobRecord]:
        with self.database.read() as conn:
            rows = conn.execute(
                sa.select(jobs).where(jobs.c.name == name, jobs.c.status != JobStatus.CREATING).order_by(jobs.c.id)
            ).mappings()
            return [from_mapping(JobRecord, r) for r in rows]

    def list_jobs(
        self,
        statuses: Iterable[str] | None = None,
        name_contains: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[JobRecord]:
        query = sa.select(jobs).where(jobs.c.status != JobStatus.CREATING).order_by(jobs.c.id.desc())
        statuses = list(statuses or [])
        if statuses:
            query = query.where(jobs.c.status.in_(statuses))
        if name_contains:
            query = query.where(jobs.c.name.contains(name_contains, autoescape=True))
        if limit is not None:
            query = query.limit(limit).offset(offset)
        with self.database.read() as conn:
            return [from_mapping(JobRecord, r) for r in conn.execute(query).mappings()]

    def count_jobs(self, statuses: Iterable[str] | None = None, name_contains: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status != JobStatus.CREATING)
        statuses = list(statuses or [])
        if statuses:
            query = query.where(jobs.c.status.in_(statuses))
        if name_contains:
            query = query.where(jobs.c.name.contains(name_contains, autoescape=True))
        with self.database.read() as conn:
            return int(conn.execute(query).scalar_one())

    def update_job(self, job_id: int, *, expect: Iterable[str] | None = None,
                   no_units_in: Iterable[str] | None = None, expect_control: str | None = None,
                   **fields: Any) -> bool:
        """Set fields; with `expect`, only if the job's status is one of those; with `expect_control`,
        only if its `control` request is that one (still stands); with `no_units_in`, only
        if none of its units is in one of those statuses (checked in the same statement: a final status
        computed from counts must not land after a retry put units back to PENDING). True if it changed.

        A status change also runs the job's working clock (`active_seconds`, `running_since`), in the
        same statement, so no transition anywhere can forget it: entering RUNNING starts a stretch
        (unless one runs), leaving RUNNING adds it to `active_seconds`."""
        if "status" in fields:
            fields.update(_clock_fields(fields["status"], time.time()))
        fields = {name: storable(value) for name, value in fields.items()}
        query = sa.update(jobs).where(jobs.c.id == job_id).values(**fields)
        if expect is not None:
            query = query.where(jobs.c.status.in_(list(expect)))
        if expect_control is not None:
            query = query.where(jobs.c.control == expect_control)
        if no_units_in is not None:
            left = sa.select(units.c.id).where(units.c.job_id == job_id, units.c.status.in_(list(no_units_in)))
            query = query.where(~sa.exists(left))
        with self.database.write() as conn:
            return conn.execute(query).rowcount > 0

    def delete_job(self, job_id: int) -> int:
        """Remove a job and everything that belongs to it (a failed create, `abp delete`), in short
        transactions (see `job_deletion`); returns the rows deleted."""
        from agentic_batch.store.job_deletion import JobDeletion

        return JobDeletion(self.database).delete_job(job_id)

    def stale_creating_jobs(self, host: str) -> list[JobRecord]:
        """Jobs left in CREATING by a process on this host (the caller checks the pid is dead)."""
        with self.database.read() as conn:
            rows = conn.execute(
                sa.select(jobs).where(jobs.c.status == JobStatus.CREATING, jobs.c.creator_host == host)
            ).mappings()
            return [from_mapping(JobRecord, r) for r in rows]


def _clock_fields(status: str, now: float) -> dict[str, Any]:
    """SET clauses for the working clock; column references read the row's values before the update."""
    stamp = sa.literal(now, sa.Float)
    if status == JobStatus.RUNNING:
        running = sa.and_(jobs.c.status == JobStatus.RUNNING, jobs.c.running_since.is_not(None))
        return {"running_since": sa.case((running, jobs.c.running_since), else_=stamp)}
    stretch = sa.case((jobs.c.running_since.is_not(None), stamp - jobs.c.running_since), else_=sa.literal(0.0))
    return {"active_seconds": jobs.c.active_seconds + stretch, "running_since": None}
