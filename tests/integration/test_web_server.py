"""`abp serve` as a user runs it: a real process, stopped with Ctrl-C while a dashboard tab is open."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx

from tests.fixtures.abp import ABP, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ctrl_c_stops_serve_while_live_streams_are_open(tmp_path: Path) -> None:
    """Before: uvicorn waited for every response to finish, and an SSE stream never does (alive 40 s later)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([*ABP, "serve", "--port", str(port)], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, env=os.environ.copy())
    opened: list[str] = []

    def tab(path: str) -> None:  # a dashboard tab: reads its stream until the server ends it
        try:
            with httpx.Client(base_url=url, timeout=httpx.Timeout(60, read=60)) as client, \
                    client.stream("GET", path) as response:
                for line in response.iter_lines():
                    if line.startswith("event:") and path not in opened:
                        opened.append(path)
        except httpx.HTTPError:
            pass

    try:
        wait_until(lambda: _answers(url), timeout=60, what="abp serve to answer")
        paths = ("/api/stream", "/api/stream?limit=5")
        readers = [threading.Thread(target=tab, args=(path,), daemon=True) for path in paths]
        for reader in readers:
            reader.start()
        wait_until(lambda: len(opened) == len(readers), timeout=30, what="both streams to send their first event")
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=30)  # generous: this bounds a hang, it does not time the exit
        except subprocess.TimeoutExpired:
            raise AssertionError("abp serve still running 30 s after Ctrl-C with two streams open") from None
        output = (tmp_path / "serve.log").read_text()
        assert code in (0, 130, -signal.SIGINT), output  # 130: uvicorn re-raises the SIGINT it handled
        assert "Traceback" not in output, output
        for reader in readers:
            reader.join(timeout=10)
            assert not reader.is_alive(), "a stream was left open by a server that exited"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/stats", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
