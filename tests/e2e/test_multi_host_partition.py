"""A job across two hosts, one of them cut off mid-job: its units are taken over once their leases
expire, and when the partition heals its late results are refused (DESIGN.md, delivery guarantee).

The hosts are network namespaces with their own hostnames, each reaching a private PostgreSQL cluster
over its own veth (agentic_batch/testing/netns.py); the partition is that veth brought down inside
the host, so packets are dropped and no connection is reset, as when a cable or a switch fails.
Skipped where namespaces cannot be made (not root, no iproute2 or PostgreSQL server binaries).
Short leases (ABP_LEASE_SECONDS) keep it quick; nothing here asserts how long anything took.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.testing import netns

UNITS = 30
#: Long enough that a unit claimed just before the cut finishes during it (its result is then late).
UNIT_SECONDS = 1.0
LEASE_SECONDS = 2.0
#: Only guards against a hang; the test asserts outcomes, not times.
PATIENCE = 120.0

WORKER = f'''\
import asyncio
import socket


async def work(payload):
    await asyncio.sleep({UNIT_SECONDS})
    return {{"host": socket.gethostname(), "i": payload["i"]}}
'''

HOLD_JOB_ROW = """\
import sys, time
import psycopg
from agentic_batch.store.db import pg_connect_args  # the options every abp connection carries
import sqlalchemy as sa
url = sa.make_url(sys.argv[1])
conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False),
                       **pg_connect_args(url))
print("ready", flush=True)
sys.stdin.readline()
conn.execute("SELECT id FROM jobs WHERE id = %s FOR NO KEY UPDATE", (int(sys.argv[2]),))
print("locked", flush=True)
time.sleep(3600)
"""


@pytest.fixture
def hosts() -> Iterator[netns.Hosts]:
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    made = netns.Hosts(2)
    try:  # everything made is removed however the test ends (Hosts cleans up a failed setup itself)
        with made:
            yield made
    finally:
        made.close()


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_partitioned_host_units_taken_over_and_late_results_refused(hosts: netns.Hosts, tmp_path: Path) -> None:
    import psycopg

    first, second = hosts.hosts
    (tmp_path / "items.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(UNITS)))
    (tmp_path / "hostwork.py").write_text(WORKER)

    def env(host: netns.NamespaceHost) -> dict[str, str]:
        return {**os.environ, "ABP_HOME": str(tmp_path / f"home-{host.name}"), "ABP_DB_URL": hosts.url_for(host),
                "ABP_LEASE_SECONDS": str(LEASE_SECONDS), "ABP_WARM_EXECUTOR": "0"}

    def abp(host: netns.NamespaceHost, *args: str) -> str:
        done = subprocess.run(host.argv(sys.executable, "-m", "agentic_batch", *args), env=env(host), cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    job_id = int(abp(first, "create", "--name", "partition", "--jsonl", str(tmp_path / "items.jsonl"), "--key", "i",
                     "--worker", "python", "--function", f"{tmp_path / 'hostwork.py'}:work", "--concurrency", "4"))
    store = psycopg.connect(hosts.admin_url.replace("postgresql+psycopg", "postgresql").split("?")[0],
                            autocommit=True)

    def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return store.execute(sql, params).fetchall()

    # on each host, a connection ready to lock the job row on request (see below)
    lockers = {host.name: subprocess.Popen(host.argv(sys.executable, "-c", HOLD_JOB_ROW, hosts.url_for(host),
                                                     str(job_id)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True) for host in hosts.hosts}
    for locker in lockers.values():
        assert locker.stdout is not None and locker.stdout.readline().strip() == "ready"
    abp(first, "start", str(job_id), "--skip-test")
    with open(tmp_path / "joiner.log", "wb") as out:
        joiner = subprocess.Popen(second.argv(sys.executable, "-m", "agentic_batch", "executor", str(job_id),
                                              "--join"), env=env(second), cwd=tmp_path, stdout=out,
                                  stderr=subprocess.STDOUT)
    executor_of = dict(wait_for("an executor on each host", lambda: len(found := rows(
        "SELECT host, id FROM executors WHERE job_id = %s", job_id)) == 2 and found))
    # cut off a host that holds units (the first one does from the start; the joiner may not yet)
    holders = wait_for("a host holding units", lambda: rows(
        "SELECT lease_owner, id, attempt FROM units WHERE job_id = %s AND status = 'RUNNING' ORDER BY id", job_id))
    cut_off = holders[0][0]
    victim, survivor = (first, second) if executor_of[first.name] == cut_off else (second, first)

    # the cut-off host is also inside a transaction holding the job row's lock, which every claim takes:
    # the server must drop the dead session (keepalives, store/db.py) for the other host to claim again
    locker = lockers[victim.name]
    assert locker.stdin is not None and locker.stdout is not None
    locker.stdin.write("lock\n")
    locker.stdin.flush()
    assert locker.stdout.readline().strip() == "locked"
    victim.partition()
    # what it holds now it cannot finish in the store: no write of its can reach the server any more
    held = rows("SELECT id, attempt FROM units WHERE job_id = %s AND status = 'RUNNING' AND lease_owner = %s",
                job_id, cut_off)
    assert held, f"{victim.name} held no unit when cut off"
    taken_over = {unit_id for unit_id, _ in held}
    # their leases lapse (the host cannot renew them) and the other host's claims take them back
    wait_for("the cut-off host's units to be completed by the other host", lambda: all(
        status == "COMPLETED" and attempt > held_attempt for (status, attempt), (_, held_attempt)
        in zip((rows("SELECT status, attempt FROM units WHERE id = %s", unit_id)[0] for unit_id, _ in held),
               held, strict=True)))
    victim.heal()

    wait_for(f"job {job_id} to end", lambda: rows("SELECT status FROM jobs WHERE id = %s", job_id)[0][0]
             not in ("RUNNING", "CREATED"))
    refusals = wait_for("the healed host's late results to be refused", lambda: rows(
        "SELECT unit_id, message FROM logs WHERE job_id = %s AND executor_id = %s AND message LIKE %s",
        job_id, cut_off, "%not recorded%"))
    assert joiner.wait(timeout=PATIENCE) == 0, (tmp_path / "joiner.log").read_text()

    assert rows("SELECT status FROM jobs WHERE id = %s", job_id) == [("COMPLETED",)]
    units = rows("SELECT id, status, data, attempt, lease_owner FROM units WHERE job_id = %s", job_id)
    assert len(units) == UNITS and {status for _, status, *_ in units} == {"COMPLETED"}
    assert sorted(data["i"] for _, _, data, *_ in units) == list(range(UNITS))  # every unit exactly once
    for unit_id, _, data, _, _ in units:
        if unit_id in taken_over:  # the result is the attempt that owned the unit: the other host's
            assert data["host"] == survivor.name, (unit_id, data)
    # every result the cut-off host came back with for a taken-over unit was refused, and said so
    assert {unit_id for unit_id, _ in refusals} <= taken_over
    assert {unit_id for unit_id, _ in refusals}, "no late result was refused"
    assert all("lease was no longer this executor's" in message for _, message in refusals)
    assert rows("SELECT count(*) FROM jobs WHERE status = 'RUNNING'") == [(0,)]
    for pid, in rows("SELECT pid FROM executors WHERE job_id = %s", job_id):
        wait_for(f"executor pid {pid} to exit", lambda pid=pid: not _alive(pid))
    store.close()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
