"""The dashboard as a background process: `abp serve --detach | --status | --stop`, MCP `open_dashboard`
and `stop_dashboard`.

Why it is trusted to be ours: the detached server holds an exclusive flock on `run/dashboard.lock`
for its whole life and writes `dashboard.pid` (JSON: pid, the pid's start time, host, port) only once
it listens. A dashboard counts as running only if the lock is held *and* the recorded pid is alive
with the same start time, so a pid file left by a crash, a reboot, or a pid the kernel gave to another
process since is stale: it is removed and a new server is started.

Why it outlives its caller: it is started like an executor (`engine.launch.spawn_detached`): a session
of its own, stdin from /dev/null, stdout and stderr to `$ABP_HOME/dashboard.log`, no inherited file
descriptors, so an MCP server on stdio, or a terminal, can exit without taking it along.

The same rules as `abp serve`: loopback by default; any other address only with a token of 16+
characters, handed to the child in its environment (never its argv, which `ps` shows).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from agentic_batch.config import Settings
from agentic_batch.engine.launch import spawn_detached
from agentic_batch.engine.procs import pid_start_token, process_alive
from agentic_batch.errors import AbpError, InvalidSpec
from agentic_batch.service.models import DashboardInfo

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3847
#: The argument `abp serve` takes in the detached child (hidden from --help).
CHILD_FLAG = "--detached-child"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def pid_path(settings: Settings) -> Path:
    return settings.home / "dashboard.pid"


def log_path(settings: Settings) -> Path:
    return settings.home / "dashboard.log"


def _lock_path(settings: Settings, name: str) -> Path:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return settings.run_dir / name


def url_for(host: str, port: int) -> str:
    """What to open in a browser: a wildcard bind is reached on loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def check_bind(host: str, port: int, token: str | None, origin: str = "--token") -> None:
    """`abp serve`'s rules, for the foreground and the detached server alike."""
    from agentic_batch.web.config import TOKEN_RECIPE, token_problem  # stdlib-only module: no FastAPI here

    problem = token_problem(token, host)
    if problem == "is missing":
        raise InvalidSpec(f"refusing to serve on {host} without a token",
                          hint=f"set ABP_API_TOKEN or pass --token (make one with {TOKEN_RECIPE}), or bind 127.0.0.1")
    if problem is not None:
        raise InvalidSpec(f"refusing to serve on {host}: the token from {origin} {problem}",
                          hint=f"make a strong one with {TOKEN_RECIPE}")
    if isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidSpec(f"--port {port} is not a TCP port")


def _lock_held(settings: Settings) -> bool:
    """Does some process hold the dashboard lock? (Taking it for a moment says no.)"""
    path = _lock_path(settings, "dashboard.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def _read_record(settings: Settings) -> dict[str, object] | None:
    try:
        record = json.loads(pid_path(settings).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _info(settings: Settings, record: dict[str, object], running: bool, **extra: object) -> DashboardInfo:
    host, port = str(record.get("host", DEFAULT_HOST)), int(record.get("port", DEFAULT_PORT))  # type: ignore[call-overload]
    return DashboardInfo.model_validate({
        "running": running, "url": url_for(host, port), "pid": record.get("pid"), "host": host, "port": port,
        "started_at": record.get("started_at"), "token_required": bool(record.get("token_required")),
        "log": str(log_path(settings)), "started": False, "stopped": False, "note": None, **extra})


def _not_running(settings: Settings, note: str | None = None, **extra: object) -> DashboardInfo:
    return DashboardInfo(running=False, url=None, pid=None, host=None, port=None, started_at=None,
                         token_required=False, log=str(log_path(settings)), started=False, stopped=False,
                         note=note, **extra)


def status(settings: Settings) -> DashboardInfo:
    """The running dashboard, or not running (a stale pid file is removed and said so)."""
    record = _read_record(settings)
    if record is None:
        return _not_running(settings)
    pid = record.get("pid")
    alive = isinstance(pid, int) and process_alive(pid, str(record.get("pid_start") or "") or None)
    if alive and _lock_held(settings):
        return _info(settings, record, running=True)
    with contextlib.suppress(OSError):
        pid_path(settings).unlink()
    return _not_running(settings, note=f"removed a stale pid file (pid {pid} is gone or is not a dashboard)")


def start(settings: Settings, host: str = DEFAULT_HOST, port: int | None = None, token: str | None = None,
          cwd: Path | None = None) -> DashboardInfo:
    """The running dashboard if there is one (wherever it listens), else a new detached one on `port`
    (default 3847). A running one on another address than the one asked for is returned with a note."""
    asked = port
    port = DEFAULT_PORT if port is None else port
    check_bind(host, port, token)
    with _spawn_guard(settings):
        current = status(settings)
        if current.running:
            if asked is not None and (current.host, current.port) != (host, port):
                current.note = (f"already running on {current.host}:{current.port}; "
                                f"stop it first to serve on {host}:{port}")
            return current
        log = log_path(settings)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {name: value for name, value in os.environ.items() if name != "ABP_API_TOKEN"}
        if token:
            env["ABP_API_TOKEN"] = token
        argv = [sys.executable, "-m", "agentic_batch", "serve", "--host", host, "--port", str(port), CHILD_FLAG]
        proc = spawn_detached(argv, log, str(cwd or Path.cwd()), env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            record = _read_record(settings)
            if record is not None and record.get("pid") == proc.pid:
                return _info(settings, record, running=True, started=True, note=current.note)
            if proc.poll() is not None:
                raise AbpError(f"the dashboard did not start (exit {proc.returncode})"
                               + (f": {_last_line(log)}" if _last_line(log) else ""), hint=f"see {log}")
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise AbpError(f"the dashboard did not start within {START_TIMEOUT_S:g}s", hint=f"see {log}")


def stop(settings: Settings) -> DashboardInfo:
    """SIGTERM the running dashboard (SIGKILL after a grace period); not running is not an error."""
    with _spawn_guard(settings):
        current = status(settings)
        if not current.running or current.pid is None:
            return current
        record = _read_record(settings) or {}
        token = str(record.get("pid_start") or "") or None
        os.kill(current.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process_alive(current.pid, token) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_alive(current.pid, token):
            os.kill(current.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            pid_path(settings).unlink()
        return current.model_copy(update={"running": False, "stopped": True})


@contextlib.contextmanager
def registered(settings: Settings, host: str, port: int, token_required: bool) -> Iterator[None]:
    """In the detached server: hold the dashboard lock for life and publish the pid file (call once the
    socket is bound); remove the file on the way out if it still names this process."""
    fd = os.open(_lock_path(settings, "dashboard.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AbpError("another detached dashboard is running for this ABP_HOME",
                       hint="`abp serve --status`; `abp serve --stop` stops it") from None
    record = {"pid": os.getpid(), "pid_start": pid_start_token(os.getpid()), "host": host, "port": port,
              "url": url_for(host, port), "started_at": time.time(), "token_required": token_required}
    path = pid_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(json.dumps(record))
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    try:
        yield
    finally:
        if (_read_record(settings) or {}).get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                path.unlink()
        os.close(fd)


@contextlib.contextmanager
def _spawn_guard(settings: Settings) -> Iterator[None]:
    """One start or stop at a time per ABP_HOME (two racing `open_dashboard` calls start one server)."""
    fd = os.open(_lock_path(settings, "dashboard.spawn"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""
