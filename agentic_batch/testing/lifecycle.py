"""Start/stop plumbing shared by the scripted model servers (a stdlib HTTP server in a thread)."""

from __future__ import annotations

import abc
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import HTTPServer
from typing import Self


class ServerLifecycle(abc.ABC):
    """Mixin: `stop()` and the context manager for a server that sets `_httpd`, `_thread` and
    `_stopping` in its own `start()`."""

    _httpd: HTTPServer | None
    _thread: threading.Thread | None
    _stopping: threading.Event

    @property
    def root_url(self) -> str:
        """http://host:port of the running server."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @abc.abstractmethod
    def start(self) -> Self:
        """Bind, start the serving thread, return self."""

    def stop(self) -> None:
        """Stop serving; handlers that hang or wait on latency return at once."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_stopped(server: ServerLifecycle, url: str, summary: Callable[[], str]) -> None:
    """A scripted server's command line: print its URL, serve until Ctrl-C or SIGTERM, then stop it and
    print `summary()` (a benchmark's `terminate()` still gets the server's counts)."""
    print(url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(summary(), flush=True)
