"""Run by the huey venv's interpreter (no agentic_batch here): N no-op tasks through huey's SqliteHuey.

Enqueues N tasks into a fresh SQLite file (not timed, like `abp create`), then starts the real
`huey_consumer` process with W workers of kind K (thread or greenlet) and times from its launch until
the queue is empty and the last task has run (each task appends its id to a file opened in append
mode; the run ends when N bytes are there). Prints one JSON line: wall seconds, units/s, consumer CPU.

    python huey_dispatch.py DIR N WORKERS KIND
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

TASKS = '''
from huey import SqliteHuey

huey = SqliteHuey(filename={db!r}, results=False)
DONE = open({done!r}, "a", buffering=1)


@huey.task()
def noop(i):
    DONE.write("\\n")  # one byte per task, flushed at once (line-buffered): cheap, and countable
'''


def main() -> None:
    folder, units, workers, kind = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    folder.mkdir(parents=True, exist_ok=True)
    db, done = folder / "huey.db", folder / "done.txt"
    for path in (db, done):
        path.unlink(missing_ok=True)
    done.touch()
    (folder / "bench_tasks.py").write_text(TASKS.format(db=str(db), done=str(done)))
    sys.path.insert(0, str(folder))
    import bench_tasks

    for i in range(units):
        bench_tasks.noop(i)
    assert bench_tasks.huey.pending_count() == units
    consumer = str(Path(sys.executable).with_name("huey_consumer"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([consumer, "bench_tasks.huey", "-w", str(workers), "-k", kind, "-q"], cwd=folder,
                            env={**os.environ, "PYTHONPATH": str(folder)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while os.path.getsize(done) < units:
        if proc.poll() is not None:
            raise SystemExit(f"huey_consumer exited with {proc.returncode}")
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"wall_s": wall, "units_per_s": units / wall, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
