"""The state of one executor's run, in one object with one owner: the mode the pool loop obeys,
why the run is stopping, the job's quota hold, the signals received, and how the run left the job.

Everything that asks the run to change (a signal, the job's control column, the budget, the store
giving up, a quota error) goes through `RunState`'s methods, and everything that acts on it (the pool,
the drain, the reduce step, `finish`) reads it here, so the rules of which request wins live in one
place: a more severe mode wins over a milder one, and a stronger stop reason over a weaker one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum

from agentic_batch.engine.outage import StoreUnavailable

log = logging.getLogger(__name__)


class Mode(StrEnum):
    """What the pool loop does now, from mildest to most severe."""

    #: Claim and run units.
    RUN = "run"
    #: Claim nothing more; let in-flight units finish within the grace period, then PAUSED.
    STOP = "stop"
    #: Stop now (a second signal, or the store gave up): cancel in-flight units, PAUSED.
    ABORT = "abort"
    #: The job was cancelled: kill everything now.
    CANCEL = "cancel"


_SEVERITY = {Mode.RUN: 0, Mode.STOP: 1, Mode.ABORT: 2, Mode.CANCEL: 3}


class StopReason(StrEnum):
    """Why a run ended: what `Pool.run()` returns and what `finish` decides the job's status from."""

    #: No unit left to run (every unit finished, failed or was cancelled).
    FINISHED = "finished"
    #: The job's control column asked to stop (`abp stop`), or the job left RUNNING.
    REQUESTED = "requested"
    #: The job's budget is spent.
    BUDGET = "budget"
    #: SIGTERM/SIGINT (a second one aborts).
    SIGNALLED = "signalled"
    #: The store stayed unavailable past the outage window.
    STORE_LOST = "store lost"
    #: The job was cancelled.
    CANCELLED = "cancelled"

    @property
    def pause_reason(self) -> str:
        """The job's `pause_reason` when this stop pauses it."""
        return {StopReason.BUDGET: "budget", StopReason.STORE_LOST: "store"}.get(self, "stopped")

    @property
    def by_request(self) -> bool:
        """A stop that only the job's control column asked for: a `resume` clearing that request
        before the pause is written wins (the pause is guarded by the request still standing)."""
        return self is StopReason.REQUESTED


#: A later request replaces the recorded reason only when it is stronger (a signal after the budget
#: stopped the run pauses as "stopped", a stop request after the budget keeps "budget").
_STRENGTH = {StopReason.FINISHED: 0, StopReason.REQUESTED: 1, StopReason.BUDGET: 2, StopReason.SIGNALLED: 3,
             StopReason.STORE_LOST: 4, StopReason.CANCELLED: 5}


@dataclass
class RunState:
    """One pass of an executor over its job (a resume racing the end starts a fresh pass: `reset`)."""

    mode: Mode = Mode.RUN
    #: Why the run is stopping; None while nothing asked it to.
    reason: StopReason | None = None
    #: SIGTERM/SIGINT received during this pass.
    signals: int = 0
    #: No new units before this time (a quota error's reset time, job-wide through the store).
    hold_until: float | None = None
    #: Set on every request, so a pool loop that sleeps wakes to look at the state.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Names this run in log lines.
    name: str = "executor"
    #: This executor stopped while others work on, or the store is gone: it must not start another pass.
    left_job: bool = False
    #: The pause could not even be recorded (the store is gone): the job still shows RUNNING.
    stranded: bool = False
    #: The store stayed unavailable past the outage window.
    store_lost: StoreUnavailable | None = None

    def request(self, mode: Mode, reason: StopReason, why: str) -> None:
        """Ask the pool loop to stop, abort or cancel; a more severe mode wins over a milder one, a
        stronger reason over a weaker one."""
        if _SEVERITY[mode] > _SEVERITY[self.mode]:
            log.info("%s: %s -> %s", self.name, why, mode)
            self.mode = mode
        if self.reason is None or _STRENGTH[reason] > _STRENGTH[self.reason]:
            self.reason = reason
        self.wake.set()

    def lose_store(self, exc: StoreUnavailable) -> None:
        """The store gave up: abort now (the job is then paused with reason "store")."""
        self.store_lost = exc
        self.request(Mode.ABORT, StopReason.STORE_LOST, f"store {exc.kind} past the outage window")

    def signal(self, signame: str) -> None:
        """A SIGTERM/SIGINT: the first stops (drain, then pause), the second aborts."""
        self.signals += 1
        self.request(Mode.STOP if self.signals == 1 else Mode.ABORT, StopReason.SIGNALLED, f"{signame} received")

    @property
    def running(self) -> bool:
        return self.mode is Mode.RUN

    def held(self, now: float | None = None) -> bool:
        """True while a quota hold keeps new units from starting."""
        return self.hold_until is not None and self.hold_until > (time.time() if now is None else now)

    def hold(self, until: float) -> float:
        """Extend the quota hold to `until` (never shorten it); returns the hold now in force."""
        self.hold_until = max(until, self.hold_until or 0.0)
        return self.hold_until

    def reset(self, hold_until: float | None = None) -> None:
        """A fresh pass: the job is RUNNING again after this one ended (a resume or retry raced it)."""
        self.mode, self.reason, self.signals, self.hold_until = Mode.RUN, None, 0, hold_until
        self.left_job, self.stranded, self.store_lost = False, False, None

    def new_wake(self) -> asyncio.Event:
        """A wake event for a new event loop (each pass runs in one of its own)."""
        self.wake = asyncio.Event()
        return self.wake
