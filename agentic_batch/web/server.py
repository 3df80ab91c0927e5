"""Run the app on a real uvicorn server in a background thread (tests, benchmarks, notebooks).

`abp serve` runs uvicorn in the foreground; this is the same server, started on a free port with a
pre-bound socket (no race for the port) and stopped cleanly, open SSE streams included.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


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
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
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
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
