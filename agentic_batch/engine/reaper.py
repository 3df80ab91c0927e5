"""Making sure no agent process outlives its unit or its executor, even after `kill -9`, even if it
leaves its session (`setsid()`), double-forks, or both.

Agents run in sessions of their own (a timeout kills each one's process group at once) and carry
PR_SET_PDEATHSIG, which only reaches the direct child. Everything else is tracked two ways:

* **cgroup v2 per unit** (engine/cgroups.py), where the host allows it: every process a unit starts
  joins the unit's cgroup before it execs, and nothing it does (setsid, double fork, clearing its
  environment) takes it out. The unit's end writes `cgroup.kill`.
* **Fallback** (no cgroup2, no delegation, `ABP_PROCESS_CGROUPS=0`): the executor becomes a child
  subreaper, so orphans re-parent to it rather than to init, and every agent carries
  `ABP_UNIT_TOKEN=<executor token>.<n>` in its environment. The unit's end freezes and kills the
  process trees below its agents plus every orphan of ours that carries its token. A background
  sweep reaps the zombies of orphans we adopted and tells the watchdog about them.

Each executor starts a tiny watchdog process (engine/watchdog.py) that holds the read end of a pipe
and learns the token, the cgroup, every agent group and every adopted orphan. When the executor dies
by any means, the kernel closes the pipe; the watchdog reads EOF and kills them all.

Out of reach: in the fallback, a process that both detaches from its parents *and* clears its
environment is killed when the executor exits (it is our orphan) or, after a `kill -9`, only if a
sweep saw it first; a root agent can move itself out of its cgroup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from agentic_batch.engine import cgroups, procs
from agentic_batch.workers.process import kill_group

log = logging.getLogger(__name__)

_WATCHDOG = Path(__file__).with_name("watchdog.py")
#: How often the fallback sweeps for adopted orphans (reaping zombies, telling the watchdog); it
#: also sweeps as soon as a unit ends, at most every _SWEEP_MIN_SECONDS.
SWEEP_SECONDS = 2.0
_SWEEP_MIN_SECONDS = 0.1
#: A zombie child of ours this old has no waiter but us: reap it.
_ZOMBIE_AGE_SECONDS = 2.0


class Reaper:
    """The executor's side of the watchdog, and the owner of the per-unit containers."""

    def __init__(self, subreaper: bool = False) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self.token = uuid.uuid4().hex[:12]
        self._units = 0
        self.cgroups: cgroups.CgroupTree | None = None
        #: Whether orphans of our agents re-parent to us (asked for by the executor, fallback only).
        self._want_subreaper = subreaper
        self.subreaper = False
        self._leaders: set[int] = set()  # direct children we spawned: their waiters reap them, not us
        self._adopted: dict[int, str] = {}  # orphans we adopted: pid -> start token
        self._zombies: dict[int, float] = {}  # zombie children of ours -> when first seen
        self._live: set[str] = set()  # tokens of unit attempts in flight
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(_WATCHDOG)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # terminal signals aimed at the executor must not reach it
            close_fds=True,
        )
        self._send(f"T {self.token}")
        self.cgroups = cgroups.CgroupTree.create(self.token, self._proc.pid)
        if self.cgroups is not None:
            self._send(f"C {self.cgroups.base}")
        elif self._want_subreaper and procs.set_child_subreaper():
            self.subreaper = True
            self._sweeper = threading.Thread(target=self._sweep_loop, name="abp-orphans", daemon=True)
            self._sweeper.start()
        log.info("agent processes tracked by %s", {"cgroup": f"cgroup {self.cgroups.base}" if self.cgroups else "",
                                                    "subreaper": "subreaper and unit tokens",
                                                    "token": "unit tokens"}[self.mode])

    @property
    def mode(self) -> str:
        """How descendants are tracked: "cgroup", "subreaper" or "token"."""
        return "cgroup" if self.cgroups else ("subreaper" if self.subreaper else "token")

    def new_unit(self) -> tuple[str, Path | None]:
        """A token and (cgroup mode) an empty cgroup for one unit attempt."""
        with self._lock:
            self._units += 1
            token = f"{self.token}.{self._units}"
            self._live.add(token)
        return token, (self.cgroups.unit() if self.cgroups is not None else None)

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()

    def add(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            self._leaders.add(pgid)
            self._send(f"+{pgid}")

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)
            self._leaders.discard(pgid)  # reaped by its own waiter by now
            self._send(f"-{pgid}")

    def release_cgroup(self, cgroup: Path) -> None:
        if self.cgroups is not None:
            self.cgroups.release(cgroup)

    def unit_ended(self, token: str) -> None:
        """A unit's attempt is over: what still carries its token is a leftover (the sweep kills it)."""
        with self._lock:
            self._live.discard(token)
        self._wake.set()

    def kill_unit_tree(self, token: str, leaders: set[int]) -> None:
        """Kill, now, the processes below `leaders` and every process carrying `token` (with theirs).

        Used where no sweep runs (no subreaper: orphans went to init, so every environment is read)
        and for processes that joined a cgroup late. With a subreaper the sweep does it in batches.
        """
        table = procs.process_table()
        me = os.getpid()
        candidates = [pid for pid, (_, _, state) in table.items() if state != "Z" and pid != me]
        roots = set(leaders) | {pid for pid in candidates if procs.unit_token_of(pid) == token}
        found = procs.descendants(table, roots)
        if found:
            procs.freeze_and_kill(found)

    # -- the fallback's sweep ------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(SWEEP_SECONDS)
            self._wake.clear()
            try:
                self.sweep()
            except Exception:  # never let the sweep take anything down
                log.debug("orphan sweep failed", exc_info=True)
            self._stop.wait(_SWEEP_MIN_SECONDS)  # units ending together share one look at /proc

    def sweep(self) -> None:
        """Look at the orphans we adopted: kill those whose unit has ended (its token says so), reap
        their zombies (only ones dead for a while, never one a waiter of ours is about to collect),
        and tell the watchdog about the live ones, so a `kill -9` of ours still reaches them."""
        me = os.getpid()
        now = time.monotonic()
        table = procs.process_table()
        with self._lock:
            live = set(self._live)
            leaders = set(self._leaders)
        watchdog = self._proc.pid if self._proc else -1
        ours = {pid: state for pid, (ppid, _, state) in table.items()
                if ppid == me and pid not in leaders and pid != watchdog}
        prefix = f"{self.token}."
        ended = set()
        for pid, state in ours.items():
            if state != "Z":
                token = procs.unit_token_of(pid)
                if token is not None and token.startswith(prefix) and token not in live:
                    ended.add(pid)
        if ended:
            procs.freeze_and_kill(procs.descendants(table, ended))
        # Only zombies from other sessions: a child our own code started (a python worker's
        # subprocess.run) stays in our session and is its caller's to collect.
        own_session = os.getsid(0)
        zombies = {pid for pid, state in ours.items() if state == "Z" and procs.session_of(pid) != own_session}
        self._zombies = {pid: self._zombies.get(pid, now) for pid in zombies}
        for pid, since in list(self._zombies.items()):
            if now - since >= _ZOMBIE_AGE_SECONDS:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
        for pid, state in ours.items():
            if state != "Z" and pid not in ended and pid not in self._adopted:
                start = procs.pid_start_token(pid)
                if start is not None:
                    self._adopted[pid] = start
                    with self._lock:
                        self._send(f"P {pid} {start}")
        self._adopted = {pid: start for pid, start in self._adopted.items() if pid in table}

    def _kill_adopted(self) -> None:
        """At the end: every orphan we adopted, tokened or not, dies with the executor."""
        me = os.getpid()
        table = procs.process_table()
        with self._lock:
            leaders = set(self._leaders)
        watchdog = self._proc.pid if self._proc else -1
        orphans = {pid for pid, (ppid, _, state) in table.items()
                   if ppid == me and state != "Z" and pid not in leaders and pid != watchdog}
        if orphans:
            procs.freeze_and_kill(procs.descendants(table, orphans))
            deadline = time.monotonic() + 2  # bounded: one stuck in the kernel must not hold us
            while orphans and time.monotonic() < deadline:
                for pid in list(orphans):
                    try:
                        if os.waitpid(pid, os.WNOHANG)[0] == pid:
                            orphans.discard(pid)
                    except (ChildProcessError, OSError):
                        orphans.discard(pid)
                if orphans:
                    time.sleep(0.01)

    # -- the end -------------------------------------------------------------------------------

    def kill_all(self) -> None:
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            kill_group(pgid)
            self.discard(pgid)

    def close(self) -> None:
        """Kill what is left, then let the watchdog clean up (cgroups) and exit (EOF)."""
        self._stop.set()
        self._wake.set()
        self.kill_all()
        if self.subreaper:
            self._kill_adopted()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=5)


class UnitProcesses:
    """The tracker one unit's worker sees (a `ProcessTracker`): registers groups with the reaper,
    gives every process the unit's token and cgroup, and kills all of it when the unit ends."""

    def __init__(self, reaper: Reaper | None) -> None:
        self._reaper = reaper
        self._groups: set[int] = set()
        self._leaders: set[int] = set()
        self._token: str | None = None
        self._cgroup: Path | None = None
        self._outside = False  # some process of ours is not in the unit's cgroup: trace it by token
        self._released = False

    def _ensure(self) -> None:
        if self._token is None and self._reaper is not None:
            self._token, self._cgroup = self._reaper.new_unit()

    def child_env(self) -> dict[str, str]:
        self._ensure()
        return {procs.UNIT_TOKEN_ENV: self._token} if self._token else {}

    def cgroup_procs(self) -> str | None:
        self._ensure()
        return str(self._cgroup / "cgroup.procs") if self._cgroup is not None else None

    def add(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._leaders.add(pgid)
        if self._reaper is not None:
            self._reaper.add(pgid)
            self._adopt_into_cgroup(pgid)

    def _adopt_into_cgroup(self, pid: int) -> None:
        """A process started by someone else (the Claude SDK): move it into the unit's cgroup now."""
        self._ensure()
        if self._cgroup is None:
            self._outside = True
            return
        if pid in cgroups.members(self._cgroup):
            return
        try:
            (self._cgroup / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            pass  # it has already exited
        except OSError:
            self._outside = True

    def discard(self, pgid: int) -> None:
        self._groups.discard(pgid)
        if self._reaper is not None:
            self._reaper.discard(pgid)

    def kill_all(self) -> None:
        if self._reaper is not None and self._token is not None and not self._released:
            self._released = True
            if self._cgroup is not None:
                self._reaper.release_cgroup(self._cgroup)
            if self._reaper.subreaper:
                self._reaper.unit_ended(self._token)  # its orphans come to us: the sweep kills them
            elif self._cgroup is None or self._outside:
                self._reaper.kill_unit_tree(self._token, {pid for pid in self._leaders if procs.process_alive(pid)})
            else:
                self._reaper.unit_ended(self._token)
        for pgid in list(self._groups):
            kill_group(pgid)
            self.discard(pgid)
