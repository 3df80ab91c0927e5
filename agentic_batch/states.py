"""The job and unit state names, as str enums every module shares (store, engine, service, interfaces).

A module of its own, with no imports, so the store can use them without pulling in the spec's
Pydantic models. They are `StrEnum`s: a member equals, hashes and JSON-encodes as its plain name,
so SQL parameters, dict lookups by name and every interface's output are unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    CREATING = "CREATING"  # units still being inserted; hidden, deleted if creation fails
    CREATED = "CREATED"
    TESTING = "TESTING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_JOB_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class UnitStatus(StrEnum):
    """A unit's state; the job's reduce step (`reduce_status`) uses RUNNING, COMPLETED and FAILED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
