"""Queries on units: bulk insert, claim / heartbeat / ack (the delivery guarantee), counts.

The claim is one UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING, inside BEGIN IMMEDIATE on
SQLite and with FOR UPDATE SKIP LOCKED on PostgreSQL, so two executors never get the same unit.
Results are fenced by (lease_owner, attempt, status RUNNING): an executor that lost its lease
cannot overwrite the unit, so a unit is COMPLETED exactly once even if its agent ran twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, cast

import sqlalchemy as sa

from agentic_batch.attempts import ATTEMPT_FIELDS
from agentic_batch.error_signature import error_signature
from agentic_batch.store import UNIT_STATUSES
from agentic_batch.store.db import Queries
from agentic_batch.store.driver_sql import DriverStatement
from agentic_batch.store.error_queries import ErrorGroupKey
from agentic_batch.store.records import NewUnit, ResultRecord, UnitRecord, UnitResult, from_mapping
from agentic_batch.store.schema import jobs, logs, units
from agentic_batch.store.storable import is_transient, rejection_reason, storable, storable_text
from agentic_batch.states import UnitStatus

log = logging.getLogger(__name__)


_CLAIM_COLUMNS = (units.c.id, units.c.job_id, units.c.seq, units.c.number, units.c.priority, units.c.key,
                  units.c.payload, units.c.status, units.c.attempt, units.c.error_count, units.c.error,
                  units.c.error_kind)
#: `ResultRecord`'s columns, in its field order; and the same with the JSON columns read as their text
#: (SQLite: the export decodes them itself, see `_json_value`).
_RESULT_COLUMNS = tuple(units.c[f.name] for f in dataclasses.fields(ResultRecord))
_RESULT_COLUMNS_TEXT = tuple(sa.type_coerce(c, sa.Text).label(c.name) if isinstance(c.type, sa.JSON) else c
                             for c in _RESULT_COLUMNS)
#: The same with the JSON columns CAST to text on every store (`result_pages`: psycopg would parse
#: PostgreSQL's json itself; its text is the text the store was given).
_RESULT_COLUMNS_CAST = tuple(sa.cast(c, sa.Text).label(c.name) if isinstance(c.type, sa.JSON) else c
                             for c in _RESULT_COLUMNS)
_JSON_DECODER = json.JSONDecoder()


def _json_value(text: str | None) -> Any:
    """A JSON column's text as its value, like the column's own `json.loads` without its two
    whitespace scans per call (the store writes no leading whitespace; anything else takes `loads`)."""
    if text is None:
        return None
    try:
        value, end = _JSON_DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)
#: Which of some keys a job has (`UnitQueries._taken_keys`): the job's `(job_id, key)` unique index,
#: probed once per key of a JSON array (SQLite) or an array (PostgreSQL).
_TAKEN_KEYS_SQLITE = sa.select(units.c.key).where(
    units.c.job_id == sa.bindparam("job_id"),
    units.c.key.in_(sa.select(sa.column("value")).select_from(sa.func.json_each(sa.bindparam("keys", type_=sa.Text)))))
_TAKEN_KEYS_PG = sa.select(units.c.key).where(
    units.c.job_id == sa.bindparam("job_id"),
    units.c.key == sa.any_(sa.bindparam("keys", type_=sa.ARRAY(sa.Text))))
_SESSION_ID_LENGTH = cast(sa.String, units.c.session_id.type).length or 128


def _storable_result(r: UnitResult) -> UnitResult:
    """The result with its text columns made storable on every dialect (see store.storable); the same
    object when nothing needed it (the usual case: no copy per result)."""
    session = storable(r.session_id)
    if isinstance(session, str) and len(session) > _SESSION_ID_LENGTH:
        session = session[:_SESSION_ID_LENGTH]
    fixed = {name: storable(getattr(r, name)) for name in _TEXT_FIELDS}
    fixed["session_id"] = session
    if all(value is getattr(r, name) for name, value in fixed.items()):
        return r
    return dataclasses.replace(r, **fixed)


_TEXT_FIELDS = ("prompt", "output", "error", "patch", "verify_output", "stdout", "stderr")


#: Attempt fields a unit sums over its attempts (every other attempt field is the latest attempt's).
_SUMMED = ("cost_usd", "tokens_in", "tokens_out")


#: The JSON columns among an attempt's fields: the driver-level UPDATE binds them as their JSON text.
_JSON_FIELDS = frozenset(name for name in ATTEMPT_FIELDS if isinstance(units.c[name].type, sa.JSON))


def _result_params(r: UnitResult, now: float, owner: str) -> dict[str, Any]:
    fields = r.attempt_fields()
    for name in _JSON_FIELDS:  # serialised as SQLAlchemy's JSON type would (None is stored as JSON null)
        value = fields[name]
        fields[name] = "null" if value is None else json.dumps(value)
    return {**{f"b_{name}": value for name, value in fields.items()},
            "b_id": r.unit_id, "b_attempt": r.attempt, "b_status": r.status, "b_prompt": r.prompt,
            "b_not_before": r.not_before, "b_err": 1 if r.count_error else 0, "b_finished": r.finished_at or now,
            "b_error_signature": error_signature(r.error), "b_owner": owner}


def _attempt_value(name: str, dialect: str) -> Any:
    if name in _JSON_FIELDS:
        text = sa.bindparam(f"b_{name}", type_=sa.Text)
        # PostgreSQL casts the text to its json column; SQLite stores the text as it is (see _insert_sql)
        return sa.cast(text, units.c[name].type) if dialect == "postgresql" else text
    param = sa.bindparam(f"b_{name}", type_=units.c[name].type)
    return units.c[name] + param if name in _SUMMED else param


def _result_update(finished: bool, dialect: str) -> sa.Update:
    """UPDATE for one result row (executemany), fenced by lease owner, attempt and RUNNING."""
    values: dict[str, Any] = {
        **{name: _attempt_value(name, dialect) for name in ATTEMPT_FIELDS},
        "status": sa.bindparam("b_status"), "prompt": sa.bindparam("b_prompt"),
        "error_count": units.c.error_count + sa.bindparam("b_err", type_=sa.Integer),
        "error_signature": sa.bindparam("b_error_signature", type_=units.c.error_signature.type),
        "lease_expires_at": None,
    }
    if finished:
        values.update(not_before=None, finished_at=sa.bindparam("b_finished", type_=sa.Float))
    else:
        values.update(not_before=sa.bindparam("b_not_before", type_=sa.Float), lease_owner=None)
    return (sa.update(units)
            .where(units.c.id == sa.bindparam("b_id"), units.c.lease_owner == sa.bindparam("b_owner"),
                   units.c.attempt == sa.bindparam("b_attempt"), units.c.status == UnitStatus.RUNNING)
            .values(**values))


_FINISH = DriverStatement(lambda dialect: _result_update(True, dialect))
_RETRY = DriverStatement(lambda dialect: _result_update(False, dialect))


def _claim_update(dialect: str) -> sa.Update:
    """The claim of one job's runnable units, highest priority then source order first (ix_units_claim)."""
    now = sa.bindparam("c_now", type_=sa.Float)
    pick = (sa.select(units.c.id)
            .where(units.c.job_id == sa.bindparam("c_job", type_=sa.Integer), units.c.status == UnitStatus.PENDING,
                   sa.or_(units.c.not_before.is_(None), units.c.not_before <= now))
            .order_by(units.c.priority.desc(), units.c.seq).limit(sa.bindparam("c_limit", type_=sa.Integer)))
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True, of=units)
    return (sa.update(units)
            .where(units.c.id.in_(pick.scalar_subquery()))
            .values(status=UnitStatus.RUNNING, lease_owner=sa.bindparam("c_owner", type_=sa.String),
                    lease_expires_at=sa.bindparam("c_expires", type_=sa.Float), attempt=units.c.attempt + 1,
                    started_at=now, not_before=None)
            .returning(*_CLAIM_COLUMNS))


_CLAIM = DriverStatement(_claim_update)


def _in_ids(column: sa.ColumnElement[Any], name: str, dialect: str) -> sa.ColumnElement[bool]:
    """`column IN (ids)` with the ids as ONE parameter (a JSON array on SQLite, an array on PostgreSQL):
    one compiled statement for any number of ids, and no per-id parameter expansion."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=sa.ARRAY(sa.Integer)))
    return column.in_(sa.select(sa.column("value")).select_from(sa.func.json_each(sa.bindparam(name, type_=sa.Text))))


def _ids_param(ids: Sequence[int], dialect: str) -> Any:
    return list(ids) if dialect == "postgresql" else json.dumps(list(ids))


def _held_select(dialect: str) -> sa.Select[Any]:
    """The results' units still leased by the owner (locked on PostgreSQL until the write commits)."""
    query = sa.select(units.c.id, units.c.attempt).where(
        _in_ids(units.c.id, "h_ids", dialect), units.c.lease_owner == sa.bindparam("h_owner", type_=sa.String),
        units.c.status == UnitStatus.RUNNING)
    return query.with_for_update() if dialect == "postgresql" else query


def _expired_sweep(dialect: str) -> sa.Update:
    """Expired leases (an executor that died or stalled) back to PENDING, in the claim's transaction."""
    return (sa.update(units)
            .where(_in_ids(units.c.job_id, "s_jobs", dialect), units.c.status == UnitStatus.RUNNING,
                   units.c.lease_expires_at < sa.bindparam("s_now", type_=sa.Float))
            .values(status=UnitStatus.PENDING, lease_owner=None, lease_expires_at=None))


def _job_slots(dialect: str) -> sa.Select[Any]:
    query = sa.select(jobs.c.id, jobs.c.priority, jobs.c.concurrency).where(_in_ids(jobs.c.id, "j_jobs", dialect))
    if dialect == "postgresql":
        # FOR NO KEY UPDATE: claimers queue on it, while the FOR KEY SHARE locks that inserting
        # events and logs (foreign keys to jobs) take in the same transaction do not conflict.
        query = query.order_by(jobs.c.id).with_for_update(of=jobs, key_share=True)
    return query


def _running_counts(dialect: str) -> sa.Select[Any]:
    return (sa.select(units.c.job_id, sa.func.count())
            .where(_in_ids(units.c.job_id, "r_jobs", dialect), units.c.status == UnitStatus.RUNNING,
                   # a unit in a provider batch is not run by any agent of ours
                   sa.or_(units.c.lease_owner.is_(None), sa.not_(units.c.lease_owner.like("batch:%"))))
            .group_by(units.c.job_id))


class _Slot(NamedTuple):
    """A claimed job's row: how many of its units may run at once, and its rank."""

    id: int
    priority: int
    concurrency: int


_HELD = DriverStatement(_held_select)
_SWEEP = DriverStatement(_expired_sweep)
_JOB_SLOTS = DriverStatement(_job_slots)
_RUNNING = DriverStatement(_running_counts)


class UnitQueries(Queries):
    """Queries on the units table (`store.units`): create, claim / heartbeat / ack, counts."""

    # -- create ---------------------------------------------------------------------------------

    def insert_units(self, job_id: int, batch: Sequence[NewUnit]) -> int:
        """Insert a batch, skipping keys the job already has (the first of a repeated key wins), and
        number the new units on from the job's highest number. Returns how many were new.

        Numbers stay dense (1..N) because only new keys get one: the skipped keys are known before
        the insert, inside the same write transaction (SQLite's BEGIN IMMEDIATE; on PostgreSQL the
        job's row is locked, so two `abp sync` runs number one after the other)."""
        if not batch:
            return 0
        if all(u.payload_json is not None for u in batch):
            return self.insert_rows(job_id, [(u.seq, storable_text(u.key), u.priority, cast(str, u.payload_json))
                                             for u in batch])
        keyed = [(storable_text(u.key), u) for u in batch]
        with self.database.write() as conn:
            first, taken = self._numbering(conn, job_id, [key for key, _ in keyed])
            fresh: list[tuple[str, NewUnit]] = []
            for key, u in keyed:
                if key not in taken:
                    taken.add(key)
                    fresh.append((key, u))
            if fresh:
                conn.execute(sa.insert(units), [{"job_id": job_id, "seq": u.seq, "number": number, "key": key,
                                                 "payload": u.payload, "priority": u.priority,
                                                 "status": UnitStatus.PENDING.value}
                                                for number, (key, u) in enumerate(fresh, first)])
            return len(fresh)

    def insert_rows(self, job_id: int, rows: Sequence[tuple[int, str, int, str]], new_keys: bool = False) -> int:
        """`insert_units` of rows made ready by the caller: (seq, key, priority, payload's JSON text),
        the key storable already (`storable_text`). One driver-level executemany of tuples: no
        `NewUnit`, no per-row binding and JSON processing in SQLAlchemy (most of a 100,000-unit
        create's time otherwise).

        `new_keys`: the caller expects none of the keys in the job (a create fills a job no one else
        writes to), so they are not looked up first (the lookup of 5,000 keys per batch cost a tenth
        of a create): the job's unique (job_id, key) index refuses a key it has, the transaction is
        rolled back, and the batch is inserted again with the lookup. The same rows either way."""
        if not rows:
            return 0
        if new_keys:
            try:
                return self._insert_rows(job_id, rows, look_up=False)
            except sa.exc.IntegrityError:
                pass  # a key the job has: number the batch again, without it
        return self._insert_rows(job_id, rows, look_up=True)

    def _insert_rows(self, job_id: int, rows: Sequence[tuple[int, str, int, str]], look_up: bool) -> int:
        with self.database.write() as conn:
            first, taken = self._numbering(conn, job_id, [row[1] for row in rows] if look_up else None)
            pending = UnitStatus.PENDING.value
            params: list[tuple[Any, ...]] = []
            number = first
            for seq, key, priority, payload_json in rows:
                if key not in taken:
                    taken.add(key)
                    params.append((job_id, seq, number, priority, key, payload_json, pending))
                    number += 1
            if params:
                sql, positional = self._insert_sql(conn)
                conn.exec_driver_sql(sql, params if positional else [dict(zip(self._INSERT_ORDER, p, strict=True))
                                                                     for p in params])
            return len(params)

    def _numbering(self, conn: sa.Connection, job_id: int, keys: Sequence[str] | None) -> tuple[int, set[str]]:
        """The number the next new unit of a job gets, and which of `keys` it has already (an empty set
        for a job without units, or without `keys`, asking nothing); the job's row locked on PostgreSQL."""
        if self.database.dialect == "postgresql":
            conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())
        top = conn.execute(sa.select(sa.func.max(units.c.number)).where(units.c.job_id == job_id)).scalar()
        taken = self._taken_keys(conn, job_id, keys) if top is not None and keys is not None else set()
        return int(top or 0) + 1, taken

    _insert_sql_text: tuple[str, bool] | None = None

    #: The parameters of `_insert_sql`, in the order of its positional form.
    _INSERT_ORDER = ("job_id", "seq", "number", "priority", "key", "payload_json", "status")

    def _insert_sql(self, conn: sa.Connection) -> tuple[str, bool]:
        """The INSERT of `insert_units` in the driver's own paramstyle, compiled by SQLAlchemy once (so
        quoting is the dialect's), with the payload bound as its JSON text; and whether its parameters
        are positional (SQLite's `?`, in `_INSERT_ORDER`) rather than named (PostgreSQL's)."""
        if self._insert_sql_text is None:
            values: dict[str, Any] = {name: sa.bindparam(name)
                                      for name in ("job_id", "seq", "number", "priority", "key", "status")}
            text = sa.bindparam("payload_json", type_=sa.Text)
            # PostgreSQL casts the text to its json column; SQLite stores the text as it is (a CAST to
            # "JSON" there would mean NUMERIC affinity).
            values["payload"] = sa.cast(text, units.c.payload.type) if conn.dialect.name == "postgresql" else text
            compiled = sa.insert(units).values(values).inline().compile(dialect=conn.dialect)  # no RETURNING
            if compiled.positional and tuple(compiled.positiontup or ()) != self._INSERT_ORDER:
                raise AssertionError(f"unexpected parameter order {compiled.positiontup}")
            self._insert_sql_text = (str(compiled), bool(compiled.positional))
        return self._insert_sql_text

    @staticmethod
    def _taken_keys(conn: sa.Connection, job_id: int, keys: Sequence[str]) -> set[str]:
        """Which of `keys` the job has, in one statement: the keys go as ONE parameter (a JSON array
        on SQLite, an array on PostgreSQL); an `IN` of 1,000 bound values per chunk cost a tenth of a
        100,000-unit create in SQLAlchemy's parameter expansion alone."""
        if conn.dialect.name == "postgresql":
            rows = conn.execute(_TAKEN_KEYS_PG, {"job_id": job_id, "keys": list(keys)})
        else:
            rows = conn.execute(_TAKEN_KEYS_SQLITE, {"job_id": job_id, "keys": json.dumps(list(keys))})
        return {r[0] for r in rows}

    def existing_keys(self, job_id: int, keys: Sequence[str]) -> set[str]:
        with self.database.read() as conn:
            rows = conn.execute(sa.select(units.c.key).where(units.c.job_id == job_id,
                                                             units.c.key.in_([storable_text(k) for k in keys])))
            return {r[0] for r in rows}

    def max_seq(self, job_id: int) -> int:
        with self.database.read() as conn:
            value = conn.execute(sa.select(sa.func.max(units.c.seq)).where(units.c.job_id == job_id)).scalar()
        return int(value) if value is not None else -1

    # -- claim / heartbeat / ack ----------------------------------------------------------------

    def claim_units(self, owner: str, job_ids: Sequence[int], limit: int, lease_seconds: float,
                    now: float | None = None) -> list[UnitRecord]:
        """Lease up to `limit` runnable units, highest job then unit priority first.

        Never more than a job's concurrency RUNNING at once, whichever executors hold them: the claim
        counts the job's RUNNING units and takes at most the difference, in the same transaction
        (SQLite's BEGIN IMMEDIATE serialises writers; on PostgreSQL the job rows are locked first, so
        two executors claiming together count one after the other). Expired leases (an executor that
        died or stalled) are taken back in the same transaction.
        """
        if limit <= 0 or not job_ids:
            return []
        now = time.time() if now is None else now
        with self.database.write(savepoint=False) as conn:
            dialect = conn.dialect.name
            ids = _ids_param(job_ids, dialect)
            _SWEEP.rowcount(conn, {"s_jobs": ids, "s_now": now})
            slots = {row[0]: _Slot(*row) for row in _JOB_SLOTS.execute(conn, {"j_jobs": ids})}
            running: dict[int, int] = {row[0]: int(row[1]) for row in _RUNNING.execute(conn, {"r_jobs": ids})}
            claimed: list[dict[str, Any]] = []
            for job_id in sorted(slots, key=lambda j: (-slots[j].priority, j)):
                want = min(limit - len(claimed), slots[job_id].concurrency - int(running.get(job_id, 0)))
                if want > 0:
                    claimed.extend(self._claim_from(conn, job_id, owner, want, lease_seconds, now))
        rank = {job_id: row.priority for job_id, row in slots.items()}
        records = [UnitRecord(**r) for r in claimed]
        records.sort(key=lambda u: (-rank.get(u.job_id, 0), -u.priority, u.seq))
        return records

    def _claim_from(self, conn: sa.Connection, job_id: int, owner: str, limit: int, lease_seconds: float,
                    now: float) -> list[dict[str, Any]]:
        """One UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING over one job's runnable units."""
        rows = _CLAIM.execute(conn, {"c_job": job_id, "c_owner": owner, "c_limit": limit, "c_now": now,
                                     "c_expires": now + lease_seconds})
        names = [c.name for c in _CLAIM_COLUMNS]
        claimed = [dict(zip(names, row, strict=True)) for row in rows]
        for unit in claimed:  # the driver hands SQLite's JSON over as its text (psycopg decodes it)
            if isinstance(unit["payload"], str | bytes):
                unit["payload"] = json.loads(unit["payload"])
        return claimed

    def claim_unit(self, owner: str, unit_id: int, lease_seconds: float) -> UnitRecord | None:
        """Lease one specific PENDING unit (the test run), or None if it is not pending."""
        now = time.time()
        with self.database.write() as conn:
            row = conn.execute(
                sa.update(units).where(units.c.id == unit_id, units.c.status == UnitStatus.PENDING)
                .values(status=UnitStatus.RUNNING, lease_owner=owner, lease_expires_at=now + lease_seconds,
                        attempt=units.c.attempt + 1, started_at=now, not_before=None)
                .returning(*_CLAIM_COLUMNS)
            ).mappings().first()
        return from_mapping(UnitRecord, row) if row else None

    def reset_unit(self, unit_id: int) -> None:
        """Back to a fresh PENDING unit (a rejected test): output and error cleared, cost kept."""
        with self.database.write() as conn:
            conn.execute(sa.update(units).where(units.c.id == unit_id).values(
                status=UnitStatus.PENDING, output=None, data=None, error=None, error_class=None, error_kind=None,
                exit_code=None, stdout=None, stderr=None, error_signature=None, error_count=0, not_before=None,
                lease_owner=None, lease_expires_at=None, finished_at=None))

    def renew_leases(self, owner: str, lease_seconds: float, now: float | None = None) -> int:
        """Heartbeat: push out the lease of every unit this owner holds. Returns how many."""
        now = time.time() if now is None else now
        with self.database.write() as conn:
            return conn.execute(
                sa.update(units).where(units.c.lease_owner == owner, units.c.status == UnitStatus.RUNNING)
                .values(lease_expires_at=now + lease_seconds)
            ).rowcount

    def apply_results(self, owner: str, results: Sequence[UnitResult]) -> list[int]:
        """Write attempt results; returns ids whose lease still held.

        Text is made storable first (NUL bytes, lone surrogates). A batch the store still refuses
        for a reason of its rows (not an outage) is split in halves until the bad row is alone;
        that row fails its own unit with the store's reason and every other row lands.
        """
        if not results:
            return []
        return self._apply_or_split(owner, [_storable_result(r) for r in results])

    def _apply_or_split(self, owner: str, results: list[UnitResult]) -> list[int]:
        try:
            return self._apply_results_once(owner, results)
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(results) == 1:
                return self._reject_result(owner, results[0], exc)
        mid = len(results) // 2
        return self._apply_or_split(owner, results[:mid]) + self._apply_or_split(owner, results[mid:])

    def _apply_results_once(self, owner: str, results: Sequence[UnitResult]) -> list[int]:
        """One transaction. The rows still leased by `owner` for that attempt are locked first (FOR
        UPDATE on PostgreSQL; BEGIN IMMEDIATE already serialises SQLite), then written with two
        executemany UPDATEs (finished units, units to retry) that repeat the fence in their WHERE."""
        now = time.time()
        with self.database.write() as conn:
            dialect = conn.dialect.name
            held = {(row[0], row[1]) for row in _HELD.execute(
                conn, {"h_ids": _ids_param([r.unit_id for r in results], dialect), "h_owner": owner})}
            applied: dict[int, UnitResult] = {}
            for r in results:
                if (r.unit_id, r.attempt) in held and r.unit_id not in applied:
                    applied[r.unit_id] = r
            finished = [_result_params(r, now, owner) for r in applied.values() if r.status != UnitStatus.PENDING]
            retried = [_result_params(r, now, owner) for r in applied.values() if r.status == UnitStatus.PENDING]
            if finished:
                _FINISH.executemany(conn, finished)
            if retried:
                _RETRY.executemany(conn, retried)
        return list(applied)

    def _reject_result(self, owner: str, result: UnitResult, exc: BaseException) -> list[int]:
        """The store refused this one result: fail its unit (fenced) with the reason, output dropped."""
        reason = rejection_reason(exc)
        message = f"the store refused this unit's result ({reason}); its output was not kept"
        log.error("unit %s attempt %s: %s", result.unit_id, result.attempt, message)
        now = time.time()
        with self.database.write() as conn:
            row = conn.execute(
                sa.update(units)
                .where(units.c.id == result.unit_id, units.c.lease_owner == owner,
                       units.c.attempt == result.attempt, units.c.status == UnitStatus.RUNNING)
                .values(status=UnitStatus.FAILED, output=None, data=None, error=message, error_class="permanent",
                        error_signature=error_signature(message),
                        error_count=units.c.error_count + 1, lease_expires_at=None, not_before=None,
                        finished_at=now)
                .returning(units.c.job_id, units.c.number)
            ).first()
            if row is None:
                return []
            conn.execute(sa.insert(logs).values(job_id=row.job_id, unit_id=result.unit_id, level="error",
                                                message=f"unit {row.number} failed: {message}", ts=now,
                                                extra={"attempt": result.attempt}))
        return [result.unit_id]

    def still_leased(self, owner: str, unit_ids: Sequence[int]) -> set[int]:
        """Which of these units this owner still holds (RUNNING under its lease)."""
        if not unit_ids:
            return set()
        with self.database.read() as conn:
            owned = sa.and_(units.c.id.in_(list(unit_ids)), units.c.lease_owner == owner,
                            units.c.status == UnitStatus.RUNNING)
            rows = conn.execute(sa.select(units.c.id).where(owned))
            return {r[0] for r in rows}

    def release_units(self, owner: str, unit_ids: Iterable[int] | None = None) -> int:
        """Give leased units back (stop, lost executor): RUNNING -> PENDING, runnable at once."""
        query = sa.update(units).where(units.c.lease_owner == owner, units.c.status == UnitStatus.RUNNING)
        ids = list(unit_ids) if unit_ids is not None else None
        if ids is not None:
            if not ids:
                return 0
            query = query.where(units.c.id.in_(ids))
        with self.database.write() as conn:
            return conn.execute(query.values(status=UnitStatus.PENDING, lease_owner=None, lease_expires_at=None,
                                             not_before=None)).rowcount

    # -- bulk status changes --------------------------------------------------------------------

    def set_units_status(self, job_id: int, from_statuses: Sequence[str], to_status: str,
                         unit_ids: Sequence[int] | None = None, reset: bool = False,
                         error_group: ErrorGroupKey | None = None) -> int:
        """Move units between statuses (cancel, retry failed); `reset` clears the last error;
        `error_group` limits it to the units failed with that cause (`abp retry JOB --error N`)."""
        values: dict[str, Any] = {"status": to_status}
        if to_status == UnitStatus.PENDING:
            values.update(lease_owner=None, lease_expires_at=None, not_before=None, finished_at=None)
        if to_status == UnitStatus.CANCELLED:
            values.update(finished_at=time.time(), lease_expires_at=None)
        if reset:
            values.update(error_count=0, error=None, error_class=None, error_kind=None, error_signature=None)
        query = sa.update(units).where(units.c.job_id == job_id, units.c.status.in_(list(from_statuses)))
        if unit_ids is not None:
            query = query.where(units.c.id.in_(list(unit_ids)))
        if error_group is not None:
            query = query.where(*error_group.matches())
        with self.database.write() as conn:
            return conn.execute(query.values(**values)).rowcount

    # -- reads ----------------------------------------------------------------------------------

    def count_units(self, job_id: int) -> dict[str, int]:
        with self.database.read() as conn:
            rows = conn.execute(
                sa.select(units.c.status, sa.func.count()).where(units.c.job_id == job_id).group_by(units.c.status)
            ).all()
        counts: dict[str, int] = dict.fromkeys(UNIT_STATUSES, 0)
        counts.update({status: int(n) for status, n in rows})
        return counts

    def failed_by_class(self, job_id: int) -> dict[str | None, int]:
        """FAILED units by their last error class (permanent, retryable, ...): why a job failed."""
        with self.database.read() as conn:
            rows = conn.execute(
                sa.select(units.c.error_class, sa.func.count())
                .where(units.c.job_id == job_id, units.c.status == UnitStatus.FAILED).group_by(units.c.error_class)
            ).all()
        return {error_class: int(n) for error_class, n in rows}

    def unit_totals(self, job_id: int) -> dict[str, float]:
        """Cost and tokens spent so far (a SUM over the job's units)."""
        with self.database.read() as conn:
            row = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(units.c.cost_usd), 0.0),
                          sa.func.coalesce(sa.func.sum(units.c.tokens_in), 0),
                          sa.func.coalesce(sa.func.sum(units.c.tokens_out), 0))
                .where(units.c.job_id == job_id)
            ).one()
        return {"cost_usd": float(row[0]), "tokens_in": int(row[1]), "tokens_out": int(row[2])}

    def finished_since(self, job_id: int, since: float) -> int:
        with self.database.read() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).where(units.c.job_id == job_id, units.c.finished_at >= since,
                                                 units.c.status.in_([UnitStatus.COMPLETED, UnitStatus.FAILED]))
            ).scalar_one())

    def get_unit(self, unit_id: int) -> UnitRecord | None:
        with self.database.read() as conn:
            row = conn.execute(sa.select(units).where(units.c.id == unit_id)).mappings().first()
        return from_mapping(UnitRecord, row) if row else None

    def first_unit(self, job_id: int, statuses: Sequence[str] = (UnitStatus.PENDING,)) -> UnitRecord | None:
        with self.database.read() as conn:
            row = conn.execute(
                sa.select(units).where(units.c.job_id == job_id, units.c.status.in_(list(statuses)))
                .order_by(units.c.priority.desc(), units.c.seq).limit(1)
            ).mappings().first()
        return from_mapping(UnitRecord, row) if row else None

    def running_units(self, job_id: int, limit: int = 50) -> list[UnitRecord]:
        with self.database.read() as conn:
            rows = conn.execute(
                sa.select(units).where(units.c.job_id == job_id, units.c.status == UnitStatus.RUNNING)
                .order_by(units.c.started_at, units.c.id).limit(limit)  # id: units claimed together tie
            ).mappings()
            return [from_mapping(UnitRecord, r) for r in rows]

    def next_not_before(self, job_id: int) -> float | None:
        """When the earliest backed-off unit becomes runnable (the executor sleeps until then)."""
        with self.database.read() as conn:
            return conn.execute(
                sa.select(sa.func.min(units.c.not_before)).where(units.c.job_id == job_id,
                                                                 units.c.status == UnitStatus.PENDING)
            ).scalar()

    def iter_units(self, job_id: int, statuses: Sequence[str] | None = None,
                   batch_size: int = 1000) -> Iterator[UnitRecord]:
        """Every unit of a job in seq order, fetched in keyset pages (constant memory)."""
        last_seq = -1
        while True:
            query = sa.select(units).where(units.c.job_id == job_id, units.c.seq > last_seq)
            if statuses:
                query = query.where(units.c.status.in_(list(statuses)))
            with self.database.read() as conn:
                page = [from_mapping(UnitRecord, r)
                        for r in conn.execute(query.order_by(units.c.seq).limit(batch_size)).mappings()]
            yield from page
            if len(page) < batch_size:
                return
            last_seq = page[-1].seq

    def iter_results(self, job_id: int, statuses: Sequence[str] | None = None,
                     batch_size: int = 2000) -> Iterator[ResultRecord]:
        """What the result rows of a job's units need, in seq order, in keyset pages (constant memory):
        an export reads only those columns, as plain tuples (a 500,000-unit export spent most of its
        time making full `UnitRecord`s from row mappings)."""
        as_text = self.database.is_sqlite  # psycopg hands JSON over parsed already
        query = sa.select(*(_RESULT_COLUMNS_TEXT if as_text else _RESULT_COLUMNS)).where(units.c.job_id == job_id)
        if statuses:
            query = query.where(units.c.status.in_(list(statuses)))
        query = query.order_by(units.c.seq).limit(batch_size)
        last_seq = -1
        while True:
            with self.database.read() as conn:
                page = [ResultRecord(*row) for row in conn.execute(query.where(units.c.seq > last_seq)).all()]
            if as_text:
                for record in page:  # the JSON columns came as text
                    record.payload = _json_value(cast(str, record.payload))
                    record.data = _json_value(record.data)
            yield from page
            if len(page) < batch_size:
                return
            last_seq = page[-1].seq

    def result_pages(self, job_id: int, statuses: Sequence[str] | None = None,
                     batch_size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """`iter_results`' rows as the driver gives them, a keyset page at a time: plain tuples in
        `ResultRecord`'s field order with the JSON columns as their stored text on both stores (a CSV
        export decodes them itself and, most often, finds nothing nested in them). The statement is
        compiled once and run on the driver's own cursor: SQLAlchemy's per-row `Row` processing cost
        as much as the fetch."""
        query = sa.select(*_RESULT_COLUMNS_CAST).where(units.c.job_id == sa.bindparam("r_job", type_=sa.Integer),
                                                       units.c.seq > sa.bindparam("r_after", type_=sa.Integer))
        if statuses:  # one bound value each (an expanding IN would need SQLAlchemy at every execution)
            query = query.where(units.c.status.in_([sa.bindparam(f"r_status{i}", status, type_=sa.String)
                                                    for i, status in enumerate(statuses)]))
        query = query.order_by(units.c.seq).limit(sa.bindparam("r_limit", type_=sa.Integer))
        compiled = query.compile(dialect=self.database.engine.dialect)
        sql, names, values = str(compiled), compiled.positiontup, dict(compiled.params)
        values.update(r_job=job_id, r_limit=batch_size)
        last_seq = -1
        while True:
            values["r_after"] = last_seq
            params: Any = tuple(values[name] for name in names) if names is not None else values
            with self.database.read() as conn:
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    cursor.execute(sql, params)
                    page = list(cursor.fetchall())
                finally:
                    cursor.close()
            if page:
                yield page
            if len(page) < batch_size:
                return
            last_seq = page[-1][0]

    def page_units(self, job_id: int, statuses: Sequence[str] | None, limit: int, offset: int) -> list[UnitRecord]:
        """One page of a job's units in seq order (LIMIT/OFFSET in SQL, not skipped in Python)."""
        query = sa.select(units).where(units.c.job_id == job_id)
        if statuses:
            query = query.where(units.c.status.in_(list(statuses)))
        query = query.order_by(units.c.seq).limit(limit).offset(max(0, offset))
        with self.database.read() as conn:
            return [from_mapping(UnitRecord, r) for r in conn.execute(query).mappings()]

    def owner_counts(self, owner: str) -> dict[str, int]:
        with self.database.read() as conn:
            rows = conn.execute(
                sa.select(units.c.status, sa.func.count()).where(units.c.lease_owner == owner).group_by(units.c.status)
            ).all()
        return {status: int(n) for status, n in rows}
