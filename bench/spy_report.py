"""Summarise a py-spy profile of the executor: where its time goes, by thread, package and function.

Input is py-spy's raw (collapsed-stack) format, e.g. from `python bench/throughput.py --py-spy FILE`
or `py-spy record --format raw -o FILE --pid PID`. Every sample of every non-idle thread counts
once, so shares are of all busy-thread samples (the store thread and the event-loop thread both
count). A frame's cumulative share is the share of samples whose stack contains it.

Run:
    python bench/spy_report.py /tmp/abp-exec-spy.txt [--top 20]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
#: Frames where SQLite itself runs (the C library, GIL released): everything under them is "sqlite".
_SQLITE_CALLS = ("DefaultDialect.do_execute ", "DefaultDialect.do_executemany ", "DefaultDialect.do_commit ",
                 "DefaultDialect.do_rollback ", "DefaultDialect.do_begin ")


def _short(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`, keeping agentic_batch/ paths readable."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    if "agentic_batch/" in path:
        path = "agentic_batch/" + path.split("agentic_batch/", 1)[1]
    else:
        path = path.rsplit("site-packages/", 1)[-1]
    return f"{match['func']} ({path})"


def _thread(frames: list[str]) -> str:
    """py-spy shortens paths, so threads are told apart by what the thread-pool work item calls."""
    runs = [i for i, f in enumerate(frames) if f.startswith("_WorkItem.run ")]
    if not any("concurrent/futures/thread.py" in f for f in frames):
        return "event-loop thread"
    if runs and runs[-1] + 1 < len(frames):
        callee = frames[runs[-1] + 1]
        if not callee.startswith(("Executor.db.", "Future.set_result ", "Store.write_batch ")):
            return "worker threads (asyncio.to_thread running the function)"
    return "store threads (Executor.db and the result flushes: SQL, then handing the result to the loop)"


def _package(frames: list[str]) -> str:
    """Which layer the leaf of a sample belongs to."""
    if any(f.startswith(_SQLITE_CALLS) for f in frames):
        return "sqlite3 C library (execute/commit)"
    leaf = frames[-1]
    if "sqlalchemy/" in leaf:
        return "SQLAlchemy (statement building, compile cache, result rows)"
    if "agentic_batch/" in leaf:
        return "agentic_batch code"
    if "selectors.py" in leaf or "asyncio/" in leaf:
        return "asyncio / selectors"
    if "pathlib.py" in leaf or "posixpath" in leaf:
        return "pathlib / os.path"
    if "json/" in leaf:
        return "json"
    if "jinja2/" in leaf or "pydantic" in leaf:
        return "jinja2 / pydantic"
    return "other stdlib / C"


def start_py_spy(pid: int, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Sample `pid` (all threads, idle ones dropped) into py-spy's raw format."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
                             "--nonblocking", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    """py-spy stops by itself when the sampled process exits; report its error, if any."""
    try:
        _, err = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=30)
    if spy.returncode not in (0, None) and err:
        print(f"py-spy: {err.decode(errors='replace').strip()[-300:]}", file=sys.stderr)


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """(frames, sample count) per line of a raw profile; frames may be empty (native code only)."""
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if count_text.isdigit():
            stacks.append(([frame for frame in stack.split(";") if frame], int(count_text)))
    return stacks


def report(path: Path, top: int = 20) -> None:
    stacks = [(frames, count) for frames, count in read_stacks(path) if frames]
    total = sum(count for _, count in stacks)
    if not total:
        print(f"{path}: no samples")
        return
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    sqlalchemy_entry: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        threads[_thread(frames)] += count
        packages[_package(frames)] += count
        leaves[_short(frames[-1])] += count
        for name in {_short(f) for f in frames if "agentic_batch/" in f and "__main__" not in f
                     and "cli/" not in f}:
            ours[name] += count
        # the deepest agentic_batch frame: which of our calls pays for SQLAlchemy/SQLite time
        if any("sqlalchemy/" in f for f in frames):
            own = [f for f in frames if "agentic_batch/" in f]
            if own:
                sqlalchemy_entry[_short(own[-1])] += count

    def table(title: str, counter: Counter[str], n: int) -> None:
        print(f"\n{title}")
        for name, count in counter.most_common(n):
            print(f"  {100 * count / total:5.1f}%  {name}")

    print(f"{path}: {total} samples (non-idle threads)")
    table("by thread:", threads, 5)
    table("by layer (leaf frame):", packages, 10)
    table(f"agentic_batch functions, cumulative (top {top}):", ours, top)
    table("store/SQLAlchemy time by the agentic_batch function that asked for it:", sqlalchemy_entry, 10)
    table(f"hottest leaf frames (self, top {top // 2}):", leaves, top // 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path, help="py-spy raw output file")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    report(args.raw, args.top)


if __name__ == "__main__":
    main()
