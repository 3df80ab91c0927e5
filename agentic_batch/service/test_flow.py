"""Test first, the Orchestrator's part: run the job's first unit (here, or in a detached process),
follow a test run under way, reclaim one whose process died, and report the result.

A mixin of the Orchestrator (like BrowseMixin): it relies on `job`, `test_report`, `_expect`, `store`
and `settings`. The ownership mechanics (leases, heartbeat, signals) are in test_run.py.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agentic_batch.errors import IllegalState
from agentic_batch.service.test_run import (TESTED_STATE, TestRunning, find_test_owner, launch_detached_test,
                                            reclaim_lost_test, register_test_owner, run_test_unit)
from agentic_batch.service.models import TestProgress, TestSettled, TestUnderWay, UnitDetail
from agentic_batch.store import JobRecord
from agentic_batch.states import JobStatus, UnitStatus

if TYPE_CHECKING:
    from agentic_batch.config import Settings
    from agentic_batch.store import Store


def start_hint(job: JobRecord) -> str:
    hints: dict[str, str] = {JobStatus.RUNNING: "it is already running; see `abp status`",
                             JobStatus.PAUSED: f"use `abp resume {job.id}`",
                             JobStatus.FAILED: f"use `abp retry {job.id}` to run failed units again"}
    return hints.get(job.status, "")


class TestFlowMixin:
    """Mixin for the Orchestrator."""

    __test__ = False  # not a pytest test class
    store: Store
    settings: Settings

    if TYPE_CHECKING:
        def job(self, ref: str | int) -> JobRecord: ...
        def _expect(self, job: JobRecord, allowed: set[str], action: str, hint: str | None = None) -> None: ...
        def test_report(self, ref: str | int, unit_id: int | None = None) -> UnitDetail: ...

    def test(self, ref: str | int) -> UnitDetail:
        """Run the first unit now, in this process (CREATED -> TESTING), and return it with its conversation.

        SIGTERM/SIGINT meanwhile raise TestInterrupted with the unit PENDING and the job CREATED again."""
        job = self.job(ref)
        self._expect(job, {JobStatus.CREATED}, "test", "only a CREATED job can be tested; reject a TESTING job first")
        owner = register_test_owner(self.store, job.id)
        if not self.store.jobs.update_job(job.id, expect=[JobStatus.CREATED], status=JobStatus.TESTING):
            self.store.executors.set_executor_state(owner, TESTED_STATE)
            raise IllegalState(f"job {job.id} changed state meanwhile; try again")
        try:
            unit_id = run_test_unit(self.store, self.settings, job, owner)
        except BaseException:
            # Back to CREATED, unless another start took the unit over meanwhile (our lease had expired).
            fresh = self.store.jobs.get_job(job.id)
            unit = self.store.units.get_unit(fresh.test_unit_id) if fresh and fresh.test_unit_id else None
            if unit is None or unit.status == UnitStatus.PENDING:
                self.store.jobs.update_job(job.id, expect=[JobStatus.TESTING], status=JobStatus.CREATED)
            raise
        return self.test_report(job.id, unit_id)

    def settle_test(self, job: JobRecord) -> JobRecord:
        """A TESTING job: a lost test run (dead owner, expired lease) is reclaimed, so the job is CREATED
        again; a live one raises TestRunning. Returns the job as it is now."""
        if job.status != JobStatus.TESTING:
            return job
        if reclaim_lost_test(self.store, self.settings, job):
            return self.job(job.id)
        owner = find_test_owner(self.store, self.settings, job)
        if owner is not None and owner.alive:
            raise TestRunning(job.id, self._test_unit_number(job, starting=True), owner)
        return job

    def test_progress(self, ref: str | int) -> TestProgress:
        """Where the job's test run stands: `running` (with pid, host, elapsed_s), `done` (the job is
        TESTING with a result waiting) or `none` (no test run: the job is CREATED or past testing)."""
        job = self.job(ref)
        try:
            job = self.settle_test(job)
        except TestRunning as exc:
            return TestUnderWay(state="running", job_id=job.id, unit=exc.unit, pid=exc.owner.pid,
                                host=exc.owner.host, elapsed_s=round(time.time() - exc.owner.started_at, 1))
        return TestSettled(state="done" if job.status == JobStatus.TESTING else "none", job_id=job.id,
                           status=JobStatus(job.status), unit=self._test_unit_number(job))

    def _test_unit_number(self, job: JobRecord, starting: bool = False) -> int | None:
        """The number users know the test unit by (the job records its id once the test run claimed it).
        A test run still `starting` (its process is up, the claim not yet made: on a loaded host that can
        outlast a client's short wait) takes the first pending unit, so it is named from the start (in a
        TESTING job only the test unit runs: if the claim landed since `job` was read, it is that one)."""
        if job.test_unit_id is None:
            first = self.store.units.first_unit(job.id, (UnitStatus.PENDING, UnitStatus.RUNNING)) if starting else None
            return first.number if first is not None else None
        return self.store.browse.unit_numbers([job.test_unit_id]).get(job.test_unit_id)

    def begin_test(self, ref: str | int) -> TestProgress:
        """Start the test run in a detached process and return its progress without waiting for the unit.

        For callers that cannot block for a whole agent run (an MCP request times out at 60 s, and the
        client may shut the server down): the test outlives them, and `test_progress` follows it. A
        test already running or waiting is reported as it is, not started twice."""
        job = self.job(ref)
        progress = self.test_progress(job.id)
        if progress.state != "none":
            return progress
        job = self.job(job.id)
        self._expect(job, {JobStatus.CREATED}, "start", start_hint(job))
        launch_detached_test(self.store, self.settings, job)
        return self.test_progress(job.id)
