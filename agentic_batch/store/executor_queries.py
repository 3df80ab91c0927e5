"""The executors table: who is working on a job, from which host and pid, and when it last beat."""

from __future__ import annotations

import time

import sqlalchemy as sa

from agentic_batch.store.db import Queries
from agentic_batch.store.records import ExecutorRecord, from_mapping
from agentic_batch.store.schema import executors


class ExecutorQueries(Queries):
    """Queries on the executors table (`store.executors`)."""

    def register_executor(self, executor_id: str, job_id: int, host: str, pid: int, pid_start: str | None) -> None:
        now = time.time()
        with self.database.write() as conn:
            conn.execute(sa.insert(executors).values(
                id=executor_id, job_id=job_id, host=host, pid=pid, pid_start=pid_start, state="running",
                started_at=now, heartbeat_at=now))

    def beat_executor(self, executor_id: str, now: float | None = None) -> None:
        with self.database.write() as conn:
            conn.execute(sa.update(executors).where(executors.c.id == executor_id)
                         .values(heartbeat_at=time.time() if now is None else now))

    def set_executor_state(self, executor_id: str, state: str) -> None:
        values: dict[str, object] = {"state": state}
        if state in ("stopped", "dead"):
            values["stopped_at"] = time.time()
        with self.database.write() as conn:
            conn.execute(sa.update(executors).where(executors.c.id == executor_id).values(**values))

    def list_executors(self, job_id: int, live_only: bool = False) -> list[ExecutorRecord]:
        query = sa.select(executors).where(executors.c.job_id == job_id)
        if live_only:
            query = query.where(executors.c.state.in_(["running", "stopping"]))
        with self.database.read() as conn:
            rows = conn.execute(query.order_by(executors.c.started_at.desc())).mappings()
            return [from_mapping(ExecutorRecord, r) for r in rows]
