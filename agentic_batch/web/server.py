"""The uvicorn server behind `abp serve`, and the same server in a background thread (tests,
benchmarks, notebooks).

Both end open SSE streams when asked to stop: uvicorn's graceful shutdown waits for every response
to finish, and a live stream never does, so Ctrl-C alone would wait forever while a dashboard tab is
open. `handle_exit` (uvicorn's signal handler) first tells the streams to end, and a short graceful
timeout bounds whatever else is still in flight.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Seconds uvicorn lets in-flight requests finish after a stop before it cancels them.
GRACEFUL_SHUTDOWN_S = 3


def stop_streams(app: Any) -> None:
    """End the app's live streams (safe from a signal handler or another thread)."""
    stream_stop = getattr(getattr(app, "state", None), "stream_stop", None)
    if stream_stop is not None:
        stream_stop.stop()


def make_server(app: Any, **config: Any) -> Any:
    """A uvicorn.Server for `app` whose exit (signal or `should_exit`) ends the app's streams first."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            stop_streams(app)
            super().handle_exit(sig, frame)

    settings = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
                **config}
    return Server(uvicorn.Config(app, **settings))


@dataclass
class RunningServer:
    url: str
    host: str
    port: int
    server: Any  # uvicorn.Server


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0,
                    start_timeout: float = 20.0) -> Iterator[RunningServer]:
    """Serve `app` until the block ends; `port=0` picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = make_server(app, lifespan="off", timeout_graceful_shutdown=1)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="abp-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web server did not start")
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    try:
        yield RunningServer(url=f"http://{shown}:{port}", host=host, port=port, server=server)
    finally:
        stop_streams(app)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
