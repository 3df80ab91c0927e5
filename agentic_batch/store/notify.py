"""Change notifications: PostgreSQL LISTEN/NOTIFY, so idle executors and live dashboards wake when
something happens instead of polling tightly. On SQLite there is no such channel; callers fall back to
short polls (SQLite is one host, and its reads are cheap).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentic_batch.store.db import Queries, pg_connect_args
from agentic_batch.store.faults import describe

if TYPE_CHECKING:
    import psycopg

CHANNEL = "abp_changes"
log = logging.getLogger(__name__)
#: How often the LISTEN thread looks whether it should stop (a wake-up costs microseconds).
_STOP_CHECK_SECONDS = 0.1


class Changes(Queries):
    """`store.changes`: send a notification naming a job (a no-op on SQLite), or listen for them."""

    @property
    def can_listen(self) -> bool:
        return self.database.dialect == "postgresql"

    def notify(self, job_id: int, what: str = "change") -> None:
        """Send it now; inside a write transaction (`Store.write_batch`), it is sent when that commits."""
        if not self.can_listen:
            return
        with self.database.write(savepoint=False) as conn:
            conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"),
                         {"channel": CHANNEL, "payload": f"{job_id}:{what}"})

    def listen(self, callback: Callable[[int, str], None]) -> Listener | None:
        """Call `callback(job_id, what)` from a background thread for every notification."""
        if not self.can_listen:
            return None
        listener = Listener(self.database.engine.url, callback)
        listener.start()
        return listener


class Listener:
    """A thread holding one LISTEN connection (psycopg, autocommit) for as long as it runs."""

    def __init__(self, url: sa.URL, callback: Callable[[int, str], None]) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        # the pool's timeout and keepalives: a LISTEN connection only reads, so without keepalives a
        # server that vanished without a FIN would leave it waiting for notifications forever
        self._connect_args = pg_connect_args(url)
        self._callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="abp-listen", daemon=True)
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self.ready.wait(timeout=10)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A new autocommit connection for LISTEN, with the store's connect options."""
        import psycopg

        return psycopg.connect(self._dsn, autocommit=True, **self._connect_args)  # type: ignore[arg-type]

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                with self.connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if lost:
                        log.info("LISTEN connection back")
                        lost = False
                    self.ready.set()
                    while not self._stop.is_set():
                        # short: `stop()` waits for this loop, and the executor's exit waits for `stop()`
                        for note in conn.notifies(timeout=_STOP_CHECK_SECONDS):
                            job, _, what = note.payload.partition(":")
                            with contextlib.suppress(ValueError):
                                self._callback(int(job), what)
            except Exception as exc:  # a dropped connection: listen again shortly; polls cover the gap
                if not lost:  # once per outage, not every retry
                    log.warning("LISTEN connection lost (%s); reconnecting", describe(exc))
                    lost = True
                self.ready.set()
                self._stop.wait(2.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
