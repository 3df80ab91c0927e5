"""Hosts on one machine: network namespaces joined to a private PostgreSQL server by veth pairs.

For the multi-host benchmark (bench/multi_host.py) and the partition test
(tests/e2e/test_multi_host_partition.py): each `NamespaceHost` is a network namespace with one veth
pair to the root namespace (its own address, its own link to bring down) and, for every command run
in it, a UTS namespace of its own with its own hostname, so the executor registers under that name
(`engine.procs.hostname`) and treats the other hosts' executors as remote (heartbeats, not pids). The
`PrivateCluster` is an `initdb` cluster in a temporary directory, run as the `postgres` user and
listening only on the root-side addresses of the veths, so the system's server is never touched.

Needs root, `ip` (iproute2), `unshare` (util-linux) and PostgreSQL's server binaries; `unavailable()`
says which is missing, in one line, for a skip. Names carry a per-run token so two runs never meet,
and `close()` removes everything it made even when what ran in between failed.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

#: The user PostgreSQL's server runs as (initdb refuses root).
PG_USER = "postgres"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian's layout, or initdb on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why namespace hosts cannot be made here (None: they can)."""
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "runuser"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if pg_bindir() is None:
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no `{PG_USER}` user to run a private PostgreSQL cluster as"
    probe = f"abpprobe{secrets.token_hex(3)}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


class NamespaceHost:
    """One host: netns `<token>h<i>`, veth `<token><i>r` (root side, 10.<net>.<i>.1) <->
    `<token><i>n` (inside, 10.<net>.<i>.2), hostname `<name>`."""

    def __init__(self, token: str, index: int, net: int, name: str) -> None:
        self.netns = f"{token}h{index}"
        self.root_if = f"{token}{index}r"
        self.inner_if = f"{token}{index}n"
        self.root_ip = f"10.{net}.{index}.1"
        self.ip = f"10.{net}.{index}.2"
        self.name = name
        self._made = False

    def create(self) -> None:
        self._made = True
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.inner_if)
        _run("ip", "link", "set", self.inner_if, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.root_ip}/24", "dev", self.root_if)
        _run("ip", "link", "set", self.root_if, "up")
        self.ns("ip", "addr", "add", f"{self.ip}/24", "dev", self.inner_if)
        self.ns("ip", "link", "set", self.inner_if, "up")
        self.ns("ip", "link", "set", "lo", "up")

    def ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.netns, *argv, check=check)

    def argv(self, *command: str) -> list[str]:
        """`command` run in this host: its network namespace and a UTS namespace named `self.name`."""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', self.name, *command]

    def partition(self) -> None:
        """Cut this host off: its side of the veth goes down (packets are dropped, nothing is reset)."""
        self.ns("ip", "link", "set", self.inner_if, "down")

    def heal(self) -> None:
        self.ns("ip", "link", "set", self.inner_if, "up")
        # the address's route goes with the link; it comes back with it, but wait until it has
        deadline = time.monotonic() + 5
        while self.root_ip not in self.ns("ip", "route", "get", self.root_ip, check=False).stdout:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)

    def close(self) -> None:
        if not self._made:
            return
        # killing what still runs in the namespace first: a namespace with processes outlives `del`
        for pid in _run("ip", "netns", "pids", self.netns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _run("ip", "link", "del", self.root_if, check=False)  # deletes its peer too
        _run("ip", "netns", "del", self.netns, check=False)


class PrivateCluster:
    """A throwaway PostgreSQL cluster listening on `addresses`:`port` (trust auth for 10.0.0.0/8)."""

    def __init__(self, addresses: list[str], port: int) -> None:
        self.addresses = addresses
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="abp-pg-"))
        self.data = self.dir / "data"
        self._started = False

    def _as_pg(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _run("runuser", "-u", PG_USER, "--", *argv)

    def start(self) -> None:
        bindir = pg_bindir()
        assert bindir is not None
        shutil.chown(self.dir, PG_USER)
        self._as_pg(str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8")
        with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write("host all all 10.0.0.0/8 trust\n")
        options = (f"-p {self.port} -c listen_addresses={','.join(self.addresses)} "
                   f"-c unix_socket_directories={self.dir} -c fsync=off -c max_connections=200")
        self._started = True
        self._as_pg(str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                    "-o", options, "-w", "-t", "60", "start")
        self._as_pg(str(bindir / "createdb"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "abp")

    def url(self, address: str) -> str:
        return f"postgresql+psycopg://postgres@{address}:{self.port}/abp?connect_timeout=5"

    def close(self) -> None:
        bindir = pg_bindir()
        if self._started and bindir is not None:
            _run("runuser", "-u", PG_USER, "--", str(bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                 "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Hosts:
    """`count` namespace hosts and a private cluster reachable from each over its veth.

    Use as a context manager (or call `close()` in a finalizer): everything made is removed however
    the block ends."""

    def __init__(self, count: int, port: int | None = None) -> None:
        token = "abp" + secrets.token_hex(2)
        net = 16 + secrets.randbelow(200)
        self.hosts = [NamespaceHost(token, i + 1, net, f"{token}-host{i + 1}") for i in range(count)]
        self.cluster = PrivateCluster([h.root_ip for h in self.hosts], port or 20000 + secrets.randbelow(20000))

    def __enter__(self) -> Hosts:
        try:
            for host in self.hosts:
                host.create()
            self.cluster.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def url_for(self, host: NamespaceHost) -> str:
        """The store URL as `host` reaches the server: over its own veth."""
        return self.cluster.url(host.root_ip)

    @property
    def admin_url(self) -> str:
        """The store URL from the root namespace (the server's address on host 1's veth)."""
        return self.cluster.url(self.hosts[0].root_ip)

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        self.cluster.close()
