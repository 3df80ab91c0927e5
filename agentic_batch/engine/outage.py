"""Waiting out an unavailable store: every store call an executor makes goes through one `OutageGuard`.

A transient fault (PostgreSQL down or restarting, a SQLite lock held past the busy timeout, a full
disk) is retried with capped, jittered backoff. The outage is shared by all callers (claim, flush,
heartbeat, control reads, finish): it starts at the first failure, is logged once when it starts and
once when any call succeeds again, and ends for everybody at that point. While the store is down the
first thing each retry does is renew this executor's leases, so that on recovery the leases are pushed
out before any claim could take them back as expired. Past the window the guard gives up: it raises
`StoreUnavailable` to the caller and to every later caller, and tells the executor, which pauses the
job with reason "store" (`give_up`).

A full disk is treated like any other store fault: it rarely clears by itself within minutes, but it
can (a log rotated, a user freeing space), and the executor has nothing better to do meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from agentic_batch.store.faults import describe, fault_kind, remedy

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Longest pause between two retries of one call.
MAX_BACKOFF = 5.0


class StoreUnavailable(Exception):
    """The store stayed unavailable for the whole outage window."""

    def __init__(self, kind: str, seconds: float, detail: str) -> None:
        super().__init__(f"store {kind} for {seconds:.0f} s: {detail}")
        self.kind = kind
        self.seconds = seconds
        self.detail = detail


class OutageGuard:
    """Retries store calls through an outage; see the module docstring."""

    def __init__(self, window: float, on_back: Callable[[str, float], None] | None = None,
                 on_give_up: Callable[[StoreUnavailable], None] | None = None,
                 prepare: Callable[[], Any] | None = None,
                 classify: Callable[[BaseException], str | None] = fault_kind) -> None:
        self.window = window
        self.classify = classify
        self.on_back = on_back
        self.on_give_up = on_give_up
        self.prepare = prepare
        self.since: float | None = None  # monotonic time of the outage's first failure
        self.kind = ""
        self.detail = ""
        self.given_up: StoreUnavailable | None = None
        #: Outages survived so far (the pool then checks for units leased to it that it does not run).
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def _backoff(self, attempt: int) -> float:
        cap = max(0.05, min(MAX_BACKOFF, self.window / 5, 0.2 * 2 ** attempt))
        assert self.since is not None
        left = self.since + self.window - time.monotonic()
        return max(0.01, min(random.uniform(cap / 2, cap), left + 0.01))

    def _failed(self, exc: BaseException, kind: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.kind, self.detail = kind, describe(exc)
            log.warning("store %s (%s); retrying for up to %.0f s (ABP_STORE_OUTAGE_SECONDS)", kind, self.detail,
                        self.window)
        else:
            self.kind, self.detail = kind, describe(exc)

    def _recovered(self) -> None:
        assert self.since is not None
        seconds, kind = time.monotonic() - self.since, self.kind
        self.since = None
        self.outages += 1
        log.warning("store back after %.1f s (%s)", seconds, kind)
        if self.on_back is not None:
            self.on_back(kind, seconds)

    def restart(self, window: float) -> None:
        """A fresh window (after giving up: a last, short attempt to record the pause)."""
        self.window, self.given_up, self.since = window, None, None

    async def call(self, run: Callable[[Callable[[], T]], Awaitable[T]], job: Callable[[], T]) -> T:
        """`run(job)` runs a store call (on the store thread); retry it while the store is unavailable."""
        attempt = 0
        while True:
            if self.given_up is not None:
                raise self.given_up
            prepare = self.prepare if self.down else None
            try:
                result = await run(_with_prepare(prepare, job) if prepare is not None else job)
            except Exception as exc:
                kind = self.classify(exc)
                if kind is None:
                    raise
                self._failed(exc, kind)
                assert self.since is not None
                if time.monotonic() - self.since >= self.window:
                    self._give_up()
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            if self.down:
                self._recovered()
            return result

    def _give_up(self) -> NoReturn:
        if self.given_up is None:
            assert self.since is not None
            self.given_up = StoreUnavailable(self.kind, time.monotonic() - self.since, self.detail)
            log.error("store %s for %.0f s (%s): giving up", self.kind, self.given_up.seconds, self.detail)
            if self.on_give_up is not None:
                self.on_give_up(self.given_up)
        raise self.given_up


def _with_prepare(prepare: Callable[[], Any], job: Callable[[], T]) -> Callable[[], T]:
    def both() -> T:
        prepare()
        return job()

    return both


def give_up_message(exc: StoreUnavailable, job_id: int, url: object = None) -> str:
    """The job-log line past the window: what happened and how to continue."""
    return (f"store {exc.kind} for {exc.seconds:.0f} s ({exc.detail}); job paused (reason: store). "
            f"To continue: {remedy(exc.kind, url)}, then run `abp resume {job_id}`")
