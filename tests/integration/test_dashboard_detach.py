"""`abp serve --detach | --status | --stop` and MCP open_dashboard / stop_dashboard: a real background
server (a session of its own, stdio closed, its own log), found again by a second call, told apart
from a stale pid file, outliving the MCP server that started it, under `abp serve`'s security rules."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.abp import abp, wait_until
from tests.fixtures.mcp_client import call, call_error, mcp_session, server_pids

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(autouse=True)
def no_stray_dashboard(abp_home: Path) -> Iterator[None]:
    yield
    try:
        pid = json.loads((abp_home / "dashboard.pid").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_detach_status_second_call_and_stop(abp_home: Path, workdir: Path) -> None:
    port = free_port()
    assert abp("serve", "--status").returncode == 1
    first = abp("serve", "--detach", "--port", str(port), cwd=workdir)
    assert first.returncode == 0, first.stderr
    url = f"http://127.0.0.1:{port}/"
    assert first.stdout.strip() == url and "dashboard started: pid" in first.stderr
    record = json.loads((abp_home / "dashboard.pid").read_text())
    pid = record["pid"]
    assert httpx.get(f"{url}api/health").status_code == 200
    # a process of its own: another session, stdin /dev/null, output to its log, not our child
    assert os.getsid(pid) == pid != os.getsid(0)
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2") == str(abp_home / "dashboard.log")

    second = json.loads(abp("serve", "--detach", "--port", str(port), "--json").stdout)
    assert second["pid"] == pid and second["running"] and not second["started"]
    elsewhere = abp("serve", "--detach", "--port", str(free_port()))
    assert elsewhere.stdout.strip() == url and f"already running on 127.0.0.1:{port}" in elsewhere.stderr
    status = json.loads(abp("serve", "--status", "--json").stdout)
    assert status["running"] and status["pid"] == pid and status["url"] == url

    stopped = abp("serve", "--stop")
    assert stopped.returncode == 0 and f"stopped the dashboard (pid {pid}" in stopped.stdout
    wait_until(lambda: not alive(pid), 10, "the dashboard to exit")
    assert not (abp_home / "dashboard.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}api/health")
    again = abp("serve", "--stop")
    assert again.returncode == 0 and "no dashboard is running" in again.stdout
    assert abp("serve", "--status").returncode == 1


def test_a_stale_pid_file_is_not_a_running_dashboard(abp_home: Path) -> None:
    abp_home.mkdir(parents=True, exist_ok=True)
    pid_file = abp_home / "dashboard.pid"
    # alive but not ours: this test's own pid (it holds no dashboard lock), then pid 1 with another start time
    for pid, start in ((os.getpid(), None), (1, "1")):
        pid_file.write_text(json.dumps({"pid": pid, "pid_start": start, "host": "127.0.0.1", "port": 1}))
        status = json.loads(abp("serve", "--status", "--json").stdout)
        assert not status["running"] and "stale pid file" in status["note"] and not pid_file.exists()
    pid_file.write_text(json.dumps({"pid": 999_999_999, "host": "127.0.0.1", "port": 1}))  # long gone
    port = free_port()
    started = json.loads(abp("serve", "--detach", "--port", str(port), "--json").stdout)
    assert started["started"] and started["pid"] != 999_999_999 and "stale pid file" in started["note"]
    assert httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
    os.kill(started["pid"], signal.SIGKILL)  # a crash: the pid file stays behind, the lock goes with it
    wait_until(lambda: not alive(started["pid"]), 10, "the dashboard to die")
    assert pid_file.exists()
    restarted = json.loads(abp("serve", "--detach", "--port", str(port), "--json").stdout)
    assert restarted["started"] and restarted["pid"] != started["pid"]


def test_security_rules_and_bad_input(abp_home: Path) -> None:
    open_bind = abp("serve", "--detach", "--host", "0.0.0.0")
    assert open_bind.returncode == 1 and "refusing to serve on 0.0.0.0 without a token" in open_bind.stderr
    weak = abp("serve", "--detach", "--host", "0.0.0.0", "--token", "short")
    assert weak.returncode == 1 and "needs at least 16" in weak.stderr
    both = abp("serve", "--detach", "--stop")
    assert both.returncode == 1 and both.stderr.strip() == "error: give one of --detach, --status, --stop"
    assert abp("serve", "--detach", "--port", "70000").returncode == 1
    assert not (abp_home / "dashboard.pid").exists()  # nothing was started
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = abp("serve", "--detach", "--port", str(port))
        assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in open_bind.stderr + weak.stderr + both.stderr + busy.stderr

    token = "t0k3n-" + "x" * 30
    port = free_port()
    started = json.loads(abp("serve", "--detach", "--host", "0.0.0.0", "--port", str(port), "--token", token,
                             "--json").stdout)
    assert started["token_required"] and started["url"] == f"http://127.0.0.1:{port}/"
    assert token.encode() not in Path(f"/proc/{started['pid']}/cmdline").read_bytes()  # not visible in ps
    assert httpx.get(f"{started['url']}api/jobs").status_code == 401
    assert httpx.get(f"{started['url']}api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert abp("serve", "--stop").returncode == 0


@pytest.mark.asyncio
async def test_open_dashboard_from_mcp_outlives_the_mcp_server(orch, abp_home: Path, workdir: Path) -> None:
    from agentic_batch.spec import JobSpec
    from tests.fixtures.funcs import ref

    (workdir / "items.jsonl").write_text('{"id": 1}\n')
    job = orch.create(JobSpec(name="shown", source={"kind": "jsonl", "path": str(workdir / "items.jsonl")},
                              worker="python", worker_options={"function": ref("noop")}), cwd=workdir).job_id
    port = free_port()
    async with mcp_session(workdir) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert not tools["open_dashboard"].annotations.read_only_hint
        assert "no job 'nope'" in await call_error(session, "open_dashboard", job_id="nope", port=port)
        assert not (abp_home / "dashboard.pid").exists()  # an unknown job started nothing
        assert "port" in await call_error(session, "open_dashboard", port=80)
        assert "has no argument 'host'" in await call_error(session, "open_dashboard", host="0.0.0.0")
        opened = await call(session, "open_dashboard", job_id=job, port=port)
        assert opened["started"] and opened["url"] == f"http://127.0.0.1:{port}/"
        assert opened["job_url"] == f"http://127.0.0.1:{port}/jobs/{job}"
        again = await call(session, "open_dashboard")
        assert again["pid"] == opened["pid"] and not again["started"] and again.get("job_url") is None
        assert again.get("note") is None  # no port asked: the running one is what was wanted
        (mcp_pid,) = server_pids()
        os.kill(mcp_pid, signal.SIGKILL)  # the MCP server dies; the dashboard must not
    wait_until(lambda: not alive(mcp_pid), 10, "the MCP server to die")
    page = httpx.get(opened["job_url"])
    assert page.status_code == 200 and "shown" in page.text
    async with mcp_session(workdir) as session:
        stopped = await call(session, "stop_dashboard")
        assert stopped["stopped"] and stopped["pid"] == opened["pid"]
        assert not (await call(session, "stop_dashboard"))["running"]
    wait_until(lambda: not alive(opened["pid"]), 10, "the dashboard to exit")
