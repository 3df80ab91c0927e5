"""Run by the pgqueuer venv's interpreter (no agentic_batch here): N no-op jobs through pgqueuer.

Recreates database DB on the PostgreSQL server of URL (a database of its own: pgqueuer's tables and
triggers never touch abp's), installs pgqueuer's schema and enqueues N jobs in batches (not timed,
like `abp create`). Then starts P consumer processes (this script with `consume`), each running Q
`QueueManager`s on their own asyncpg connection in drain mode (dequeue batch B), and times from
their launch until every one has exited (the queue is empty and every job done). pgqueuer's own
benchmark (tools/benchmark.py) uses 5 dequeuers of batch 10 on asyncpg, its fastest driver.
Prints one JSON line: wall seconds, units/s, consumers' CPU, and how many jobs the log recorded done.

    python pgqueuer_dispatch.py URL DB N PROCS QMS BATCH
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit


def with_database(url: str, db: str) -> str:
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://"))
    return urlunsplit(parts._replace(path=f"/{db}", query=""))


async def prepare(url: str, db: str, units: int) -> None:
    import asyncpg
    from pgqueuer import Queries

    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{db}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(url, db))
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        for start in range(0, units, 1000):
            n = min(1000, units - start)
            await queries.enqueue(["noop"] * n, [str(i).encode() for i in range(start, start + n)], [0] * n)
    finally:
        await conn.close()


async def consume(url: str, db: str, managers: int, batch: int) -> None:
    import asyncpg
    from datetime import timedelta

    from pgqueuer import Queries, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    async def one() -> None:
        conn = await asyncpg.connect(with_database(url, db))
        qm = QueueManager(Queries.from_asyncpg_connection(conn))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        try:
            await qm.run(mode=QueueExecutionMode.drain, batch_size=batch, dequeue_timeout=timedelta(seconds=1),
                         log_aggregation_interval=timedelta(0))
        finally:
            await conn.close()

    await asyncio.gather(*(one() for _ in range(managers)))


async def done_count(url: str, db: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(with_database(url, db))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"))
    finally:
        await conn.close()


def main() -> None:
    if sys.argv[1] == "consume":
        import uvloop

        uvloop.run(consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
        return
    url, db, units, procs, managers, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
    asyncio.run(prepare(url, db, units))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    consumers = [subprocess.Popen([sys.executable, __file__, "consume", url, db, str(managers), str(batch)])
                 for _ in range(procs)]
    codes = [p.wait() for p in consumers]
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise SystemExit(f"a pgqueuer consumer exited with {codes}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    done = asyncio.run(done_count(url, db))
    print(json.dumps({"wall_s": wall, "units_per_s": units / wall, "cpu_s": cpu, "done": done}))


if __name__ == "__main__":
    main()
