"""Job-wide limits the pool enforces: requests and tokens per minute, adaptive concurrency on
bursts of 429s (attempts whose `error_kind` is in `RATE_LIMIT_KINDS`), and the cost budget.

Rate windows are rolling 60-second windows (the shape providers use), so a job set to the provider's
own limit stays under it. Workers await `before_call()` before every model request.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

WINDOW_S = 60.0
#: Our stamps are taken before a request leaves, the provider's when it arrives: free a slot a little
#: after the provider does, or a busy executor's late first burst makes the next minute's calls collide.
WINDOW_MARGIN_S = 2.0


class RateGate:
    """`--rpm` / `--tpm` for one executor: a CallGate (see workers.base)."""

    def __init__(self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_rpm = self.rpm = rpm
        self.base_tpm = self.tpm = tpm
        self._clock = clock
        self._calls: collections.deque[float] = collections.deque()
        self._tokens: collections.deque[tuple[float, int]] = collections.deque()
        self._token_sum = 0
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock()

    @property
    def active(self) -> bool:
        """True when some limit is set: workers that cannot call `before_call` per model call themselves
        (the Claude CLI) then route the calls through something that can."""
        return self.base_rpm is not None or self.base_tpm is not None

    def set_share(self, executors: int) -> None:
        """Several executors on one job split its limits evenly (their count comes from the store)."""
        n = max(1, executors)
        self.rpm = max(1, self.base_rpm // n) if self.base_rpm is not None else None
        self.tpm = max(1, self.base_tpm // n) if self.base_tpm is not None else None

    def _expire(self, now: float) -> None:
        while self._calls and now - self._calls[0] >= WINDOW_S + WINDOW_MARGIN_S:
            self._calls.popleft()
        while self._tokens and now - self._tokens[0][0] >= WINDOW_S:
            self._token_sum -= self._tokens.popleft()[1]

    def _wait_needed(self, now: float, estimated_tokens: int) -> float:
        wait = 0.0
        if self.rpm is not None and len(self._calls) >= self.rpm:
            wait = max(wait, self._calls[len(self._calls) - self.rpm] + WINDOW_S + WINDOW_MARGIN_S - now)
        if self.tpm is not None and self._tokens and self._token_sum + estimated_tokens > self.tpm:
            # wait until enough old tokens leave the window
            excess = self._token_sum + estimated_tokens - self.tpm
            freed = 0
            for ts, n in self._tokens:
                freed += n
                if freed >= excess:
                    wait = max(wait, ts + WINDOW_S - now)
                    break
        return wait

    async def before_call(self, estimated_tokens: int = 0) -> None:
        if self.rpm is None and self.tpm is None:
            return
        async with self._lock:  # callers queue in order; nobody starves
            while True:
                now = self._now()
                self._expire(now)
                wait = self._wait_needed(now, estimated_tokens)
                if wait <= 0:
                    self._calls.append(now)
                    return
                await asyncio.sleep(wait + 0.001)

    def after_call(self, tokens_used: int) -> None:
        if self.tpm is None or tokens_used <= 0:
            return
        now = self._now()
        self._tokens.append((now, tokens_used))
        self._token_sum += tokens_used


class AdaptiveLimit:
    """In-flight limit that halves on a burst of rate-limit errors and grows back.

    A burst is `burst` rate-limit errors within `window` seconds. After a halving, errors from requests
    that were already in flight (sent under the old limit) are not counted for `window` seconds, so
    one burst halves once instead of collapsing the pool to 1. Growth: a tenth of the ceiling (at least
    one slot) per `grow_every` seconds without rate-limit errors, up to the configured concurrency.
    """

    def __init__(self, ceiling: int, burst: int = 3, window: float = 10.0, grow_every: float = 5.0) -> None:
        self.ceiling = ceiling
        self.current = ceiling
        self.burst = burst
        self.window = window
        self.grow_every = grow_every
        self.step = max(1, ceiling // 10)
        self._hits: collections.deque[float] = collections.deque()
        self._last_change = 0.0  # only meaningful once the limit has dropped below the ceiling
        self._cooldown_until = 0.0
        self.halvings = 0

    def rate_limited(self, now: float | None = None) -> bool:
        """Record a rate-limit error; True when this halved the limit."""
        now = time.monotonic() if now is None else now
        self._last_change = max(self._last_change, now)  # no growth right after an error
        if now < self._cooldown_until:
            return False
        self._hits.append(now)
        while self._hits and now - self._hits[0] > self.window:
            self._hits.popleft()
        if len(self._hits) >= self.burst and self.current > 1:
            self.current = max(1, self.current // 2)
            self._hits.clear()
            self._cooldown_until = now + self.window
            self.halvings += 1
            return True
        return False

    def value(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        if self._hits and now - self._hits[-1] > self.window:
            self._hits.clear()
        if self.current < self.ceiling and not self._hits and now - self._last_change >= self.grow_every:
            self.current = min(self.ceiling, self.current + self.step)
            self._last_change = now
        return self.current


class Budget:
    """Stop claiming before spending past `--budget-usd`: spent cost plus an estimate for what is in flight."""

    def __init__(self, limit: float | None, spent: float, finished: int) -> None:
        self.limit = limit
        self.spent = spent
        self.finished = finished
        #: Units other executors of the job have in flight (refreshed from the store).
        self.others_running = 0

    def refresh(self, spent: float, finished: int, others_running: int) -> None:
        """Job-wide figures from the store, so every executor of a job respects one budget."""
        self.spent, self.finished, self.others_running = spent, finished, max(0, others_running)

    def record(self, cost: float, finished: bool) -> None:
        self.spent += cost
        if finished:
            self.finished += 1

    @property
    def per_unit(self) -> float:
        return self.spent / self.finished if self.finished else 0.0

    def how_many(self, in_flight: int, wanted: int) -> int:
        """How many more units may start now."""
        if self.limit is None:
            return wanted
        if self.spent >= self.limit:
            return 0
        if self.per_unit <= 0:
            return wanted
        room = (self.limit - self.spent) / self.per_unit - in_flight - self.others_running
        return max(0, min(wanted, int(room)))

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit
