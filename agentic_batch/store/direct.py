"""The reads of `abp list`, `abp status JOB` and `abp show JOB UNIT`, on the DB-API driver directly.

A user types these commands dozens of times while a job runs, and importing SQLAlchemy alone costs
them ~150 ms of CPU (docs/benchmarks.md, issue 16): more than the whole answer should take. So these
reads also exist here as plain SQL on `sqlite3` / libpq (`libpq.py`: psycopg's libpq, without
psycopg's ~100-200 ms of imports). Each method is the twin of the
SQLAlchemy query of the same name (`JobQueries.get_job`, `UnitQueries.count_units`, ...): same
rows, same order, the same records back (`records.py`), so the views (`service.readout`) derive
the same answer from either. tests/integration/test_cli_direct_reads.py runs the commands both ways
on the same stores (SQLite and PostgreSQL) and compares what they print, and checks the column
types decoded here against `schema.py`.

Only the plain case is answered here: a store that exists at this abp's revision (`SCHEMA_REVISION`),
opened read-only in spirit (nothing here writes). Anything else (no store yet, an older revision to
migrate, a newer one to refuse, another driver, a lookup by key, any database error) raises
`Unavailable`, and the caller takes the SQLAlchemy path, which creates, migrates, refuses or
reports it in one line as always.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

from agentic_batch.states import JobStatus, UnitStatus
from agentic_batch.store.records import (LIVE_STATES, BatchRecord, EventRecord, ExecutorRecord, JobRecord, UnitRecord,
                                          from_mapping)
from agentic_batch.store.revision import SCHEMA_REVISION

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

#: Columns SQLAlchemy decodes (`sa.JSON`: text on SQLite, parsed by psycopg on PostgreSQL; `sa.Boolean`:
#: 0/1 on SQLite). A test checks these against `schema.py`.
JSON_COLUMNS = {"jobs": frozenset({"source", "worker_options", "output_schema"}),
                "units": frozenset({"payload", "data", "changes"}), "events": frozenset({"data"}),
                "batches": frozenset({"counts"}), "executors": frozenset()}
BOOLEAN_COLUMNS = {"jobs": frozenset({"require_changes", "keep_worktrees", "batch_api", "cache"}),
                   "units": frozenset(), "events": frozenset(), "batches": frozenset(), "executors": frozenset()}
_CHUNK = 1000


class Unavailable(Exception):
    """The direct reads cannot answer this: take the SQLAlchemy path."""


def open_direct(url: str) -> DirectReads:
    """Direct reads of the store at `url` (an `ABP_DB_URL`), or `Unavailable`."""
    if url.startswith("sqlite:///") and "?" not in url and "%" not in url:
        path = url[len("sqlite:///"):]
        if not path or path == ":memory:" or path.startswith("file:") or not os.path.isfile(path):
            raise Unavailable("no store file yet")
        import sqlite3

        from agentic_batch.config import float_env

        try:
            # mode=rw: never create the file (the SQLAlchemy path creates and migrates a new store)
            conn: Any = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None,
                                        timeout=max(0.0, float_env("ABP_SQLITE_BUSY_SECONDS", 60.0)),
                                        check_same_thread=False)
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from None
        return DirectReads(conn, "sqlite", sqlite3.Error)
    if url.startswith("postgresql+psycopg://"):
        from agentic_batch.store import libpq
        from agentic_batch.store.pg_connect import connect_args

        uri = "postgresql://" + url[len("postgresql+psycopg://"):]
        query: dict[str, str] = dict(parse_qsl(urlsplit(uri).query))
        # the pool's connect timeout and keepalives (`pg_connect`); and UTF8, unless the URL sets another
        # encoding (psycopg would decode with its codec; not repeated here: `Connection` refuses it)
        extra = connect_args(query)
        params = [("dbname", uri), *extra.items()]  # libpq expands the URL; the keywords after it win
        if "client_encoding" not in query:
            params.append(("client_encoding", "UTF8"))
        try:
            timeout = float(query.get("connect_timeout") or extra.get("connect_timeout") or 0)
            conn = libpq.Connection(params, timeout=timeout)
        except (libpq.LibpqError, ValueError) as exc:
            raise Unavailable(str(exc)) from None
        return DirectReads(conn, "postgresql", libpq.LibpqError)
    raise Unavailable("another database driver")


class DirectReads:
    """One connection, one read transaction (a consistent snapshot), the read queries the three
    commands make (`service.readout.ReadStore`). `jobs`, `units`, ... are this object, as the views
    call `store.jobs.get_job(...)` on a `Store`."""

    def __init__(self, conn: Any, dialect: str, error: type[Exception]) -> None:
        self.conn, self.dialect, self.error = conn, dialect, error
        self._counts: dict[int, dict[str, int]] = {}  # by job, read ahead for a list (`_prefetch`)
        self._totals: dict[int, dict[str, float]] = {}
        self._cached: dict[int, int] = {}
        try:
            conn.execute("BEGIN" if dialect == "sqlite" else "BEGIN READ ONLY")
            revision = self._rows("SELECT version_num FROM alembic_version", ())
        except (error, Unavailable) as exc:  # no alembic_version: a store nobody migrated yet
            self.close()
            raise Unavailable(str(exc)) from None
        if [r["version_num"] for r in revision] != [SCHEMA_REVISION]:
            self.close()  # older: the SQLAlchemy path migrates it; newer: it refuses it in one line
            raise Unavailable(f"schema revision {revision}")

    @property
    def jobs(self) -> DirectReads:
        return self

    units = cache = executors = batches = browse = events = jobs

    def close(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except self.error:
            pass
        self.conn.close()

    def _rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        if self.dialect == "postgresql":  # libpq's placeholders are numbered
            pieces = sql.split("?")
            sql = "".join(f"{piece}${n}" for n, piece in enumerate(pieces[:-1], 1)) + pieces[-1]
        try:
            cur = self.conn.execute(sql, tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except self.error as exc:
            raise Unavailable(str(exc)) from None

    def _records(self, cls: type[T], table: str, sql: str, params: Sequence[Any]) -> list[T]:
        rows = self._rows(sql, params)
        if self.dialect == "sqlite":
            for row in rows:
                for name in JSON_COLUMNS[table]:
                    if isinstance(row.get(name), str):
                        row[name] = json.loads(row[name])
                for name in BOOLEAN_COLUMNS[table]:
                    if row.get(name) is not None:
                        row[name] = bool(row[name])
        return [from_mapping(cls, row) for row in rows]

    def _scalar(self, sql: str, params: Sequence[Any]) -> Any:
        return next(iter(self._rows(sql, params)[0].values()))

    # -- jobs (JobQueries) ------------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        found = self._records(JobRecord, "jobs", "SELECT * FROM jobs WHERE id = ?", (job_id,))
        return found[0] if found else None

    def find_jobs_by_name(self, name: str) -> list[JobRecord]:
        return self._records(JobRecord, "jobs", "SELECT * FROM jobs WHERE name = ? AND status != ? ORDER BY id",
                             (name, JobStatus.CREATING.value))

    def list_jobs(self, statuses: Iterable[str] | None = None, name_contains: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[JobRecord]:
        if name_contains:
            raise Unavailable("a name filter")
        wanted = list(statuses or [])
        sql = "SELECT * FROM jobs WHERE status != ?"
        if wanted:
            sql += f" AND status IN ({', '.join('?' * len(wanted))})"
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        jobs = self._records(JobRecord, "jobs", sql, (JobStatus.CREATING.value, *wanted))
        self._prefetch([j.id for j in jobs])
        return jobs

    def _prefetch(self, job_ids: list[int]) -> None:
        """A list shows every job's counts, cost and cached units (`readout.summary_fields`): three
        grouped queries answer them for all the jobs listed, where one query per job and figure took
        63 round trips to PostgreSQL for 21 jobs (66 ms of wall at load 6, each waiting for the
        server's turn on a core). `count_units`, `unit_totals` and `cached_count` then answer these
        jobs from here; the figures are those of their one-job queries, grouped by job."""
        for start in range(0, len(job_ids), _CHUNK):
            chunk = job_ids[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            for job_id in chunk:
                self._counts[job_id] = dict.fromkeys(UnitStatus, 0)
                self._totals[job_id] = {"cost_usd": 0.0, "tokens_in": 0, "tokens_out": 0}
                self._cached[job_id] = 0
            for r in self._rows(f"SELECT job_id, status, count(*) AS n FROM units WHERE job_id IN ({marks}) "
                                "GROUP BY job_id, status", chunk):
                self._counts[r["job_id"]][r["status"]] = int(r["n"])
            for r in self._rows(f"SELECT job_id, coalesce(sum(cost_usd), 0.0) AS c, coalesce(sum(tokens_in), 0) AS i, "
                                f"coalesce(sum(tokens_out), 0) AS o FROM units WHERE job_id IN ({marks}) "
                                "GROUP BY job_id", chunk):
                self._totals[r["job_id"]] = {"cost_usd": float(r["c"]), "tokens_in": int(r["i"]),
                                             "tokens_out": int(r["o"])}
            for r in self._rows(f"SELECT job_id, count(*) AS n FROM units WHERE job_id IN ({marks}) "
                                "AND cached_from IS NOT NULL GROUP BY job_id", chunk):
                self._cached[r["job_id"]] = int(r["n"])

    # -- units (UnitQueries, BrowseQueries, CacheQueries) -----------------------------------------------

    def count_units(self, job_id: int) -> dict[str, int]:
        if job_id in self._counts:
            return dict(self._counts[job_id])
        counts: dict[str, int] = dict.fromkeys(UnitStatus, 0)
        counts.update({r["status"]: int(r["n"]) for r in self._rows(
            "SELECT status, count(*) AS n FROM units WHERE job_id = ? GROUP BY status", (job_id,))})
        return counts

    def unit_totals(self, job_id: int) -> dict[str, float]:
        if job_id in self._totals:
            return dict(self._totals[job_id])
        row = self._rows("SELECT coalesce(sum(cost_usd), 0.0) AS c, coalesce(sum(tokens_in), 0) AS i, "
                         "coalesce(sum(tokens_out), 0) AS o FROM units WHERE job_id = ?", (job_id,))[0]
        return {"cost_usd": float(row["c"]), "tokens_in": int(row["i"]), "tokens_out": int(row["o"])}

    def owner_counts(self, owner: str) -> dict[str, int]:
        return {r["status"]: int(r["n"]) for r in self._rows(
            "SELECT status, count(*) AS n FROM units WHERE lease_owner = ? GROUP BY status", (owner,))}

    def running_units(self, job_id: int, limit: int = 50) -> list[UnitRecord]:
        return self._records(UnitRecord, "units", f"SELECT * FROM units WHERE job_id = ? AND status = ? "
                             f"ORDER BY started_at, id LIMIT {int(limit)}", (job_id, UnitStatus.RUNNING.value))

    def unit_by_number(self, job_id: int, number: int) -> UnitRecord | None:
        found = self._records(UnitRecord, "units", "SELECT * FROM units WHERE job_id = ? AND number = ?",
                              (job_id, number))
        return found[0] if found else None

    def unit_by_key(self, job_id: int, key: str) -> UnitRecord | None:
        raise Unavailable("a unit by key")  # the key is matched as stored (`storable_text`): the SQLAlchemy path

    def unit_numbers(self, unit_ids: Iterable[int]) -> dict[int, int]:
        wanted = sorted({u for u in unit_ids if u is not None})
        found: dict[int, int] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            found.update((int(r["id"]), int(r["number"])) for r in self._rows(
                f"SELECT id, number FROM units WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def cached_count(self, job_id: int) -> int:
        if job_id in self._cached:
            return self._cached[job_id]
        return int(self._scalar("SELECT count(*) FROM units WHERE job_id = ? AND cached_from IS NOT NULL", (job_id,)))

    def origins(self, unit_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        ids = sorted(set(unit_ids))
        found: dict[int, tuple[int, int]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            for r in self._rows(f"SELECT id, job_id, number FROM units WHERE id IN ({', '.join('?' * len(chunk))})",
                                chunk):
                found[r["id"]] = (r["job_id"], r["number"])
        return found

    # -- executors, batches, events ---------------------------------------------------------------------

    def list_executors(self, job_id: int, live_only: bool = False) -> list[ExecutorRecord]:
        sql, params = "SELECT * FROM executors WHERE job_id = ?", list[Any]([job_id])
        if live_only:
            sql += " AND state IN (?, ?)"
            params += ["running", "stopping"]
        return self._records(ExecutorRecord, "executors", sql + " ORDER BY started_at DESC", params)

    def list_batches(self, job_id: int, live_only: bool = False, limit: int | None = None) -> list[BatchRecord]:
        sql, params = "SELECT * FROM batches WHERE job_id = ?", list[Any]([job_id])
        if live_only:
            sql += f" AND state IN ({', '.join('?' * len(LIVE_STATES))})"
            params += LIVE_STATES
        sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return self._records(BatchRecord, "batches", sql, params)

    def count_submitted(self, job_id: int) -> int:
        return int(self._scalar("SELECT count(*) FROM batches WHERE job_id = ? AND provider_id IS NOT NULL",
                                (job_id,)))

    def list_events(self, *, job_id: int | None = None, unit_id: int | None = None, after: int = 0,
                    limit: int = 500, attempt: int | None = None, reduce: bool = False) -> list[EventRecord]:
        sql, params = "SELECT * FROM events WHERE id > ?", list[Any]([after])
        if job_id is not None:
            sql, params = sql + " AND job_id = ?", [*params, job_id]
        if reduce:
            sql += " AND unit_id IS NULL"
        elif unit_id is not None:
            sql, params = sql + " AND unit_id = ?", [*params, unit_id]
        if attempt is not None:
            sql, params = sql + " AND attempt = ?", [*params, attempt]
        return self._records(EventRecord, "events", sql + f" ORDER BY id LIMIT {int(limit)}", params)

    def latest_events(self, unit_ids: Sequence[int]) -> dict[int, EventRecord]:
        if not unit_ids:
            return {}
        marks = ", ".join("?" * len(unit_ids))
        rows = self._records(EventRecord, "events", f"SELECT * FROM events WHERE id IN (SELECT max(id) FROM events "
                             f"WHERE unit_id IN ({marks}) GROUP BY unit_id)", list(unit_ids))
        return {r.unit_id: r for r in rows if r.unit_id is not None}
