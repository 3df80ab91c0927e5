"""Statements compiled by SQLAlchemy once per dialect and run through the driver.

The executor's hot path (a flush: events, results, the claim) runs a handful of statements per tick
thousands of times a minute. Built and executed through SQLAlchemy Core, each one pays for building
the expression, its cache key and per-row parameter processing: more CPU than SQLite takes to run it.
Compiled once (so quoting, casts and paramstyle are still the dialect's) and handed to the driver's
execute / executemany, only the database's own work is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler


class DriverStatement:
    """A statement built by `build(dialect_name)`, compiled once per dialect, run with the driver's
    execute / executemany. Its rows' values must need no processing by SQLAlchemy: text, numbers,
    JSON given as its text, arrays on PostgreSQL."""

    def __init__(self, build: Callable[[str], sa.ClauseElement]) -> None:
        self._build = build
        self._compiled: dict[str, tuple[str, dict[str, Any], tuple[str, ...] | None]] = {}

    def _sql(self, dialect: sa.Dialect) -> tuple[str, dict[str, Any], tuple[str, ...] | None]:
        if dialect.name not in self._compiled:
            compiled = cast(SQLCompiler, self._build(dialect.name).compile(dialect=dialect))
            order = tuple(compiled.positiontup or ()) if compiled.positional else None
            self._compiled[dialect.name] = (str(compiled), dict(compiled.params), order)
        return self._compiled[dialect.name]

    def executemany(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        sql, defaults, order = self._sql(conn.dialect)
        if order is not None:
            fill = [(name, defaults.get(name)) for name in order]
            conn.exec_driver_sql(sql, [tuple([row.get(name, default) for name, default in fill]) for row in rows])
        else:
            conn.exec_driver_sql(sql, [{**defaults, **row} for row in rows])

    def execute(self, conn: sa.Connection, row: dict[str, Any]) -> list[Any]:
        """Run once; the rows it returns (a SELECT's, RETURNING's), as the driver gives them."""
        sql, defaults, order = self._sql(conn.dialect)
        params: Any = tuple(row.get(name, defaults.get(name)) for name in order) if order is not None \
            else {**defaults, **row}
        return list(conn.exec_driver_sql(sql, params).all())

    def rowcount(self, conn: sa.Connection, row: dict[str, Any]) -> int:
        """Run once (a statement that returns no rows); how many rows it changed."""
        sql, defaults, order = self._sql(conn.dialect)
        params: Any = tuple(row.get(name, defaults.get(name)) for name in order) if order is not None \
            else {**defaults, **row}
        return int(conn.exec_driver_sql(sql, params).rowcount)
