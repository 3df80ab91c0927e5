"""The store's schema revision: which one this abp writes, and which ones it knows.

A module of its own, without SQLAlchemy, so the CLI's direct reads (`store.direct`) check a store's
revision as `Database.migrate` does without importing the engine.
"""

from __future__ import annotations

from pathlib import Path

#: The newest migration; when the database says so, opening skips Alembic entirely (fast CLI).
SCHEMA_REVISION = "0016"
MIGRATIONS = Path(__file__).with_name("migrations")


def known_revisions() -> frozenset[str]:
    """The schema revisions this version of abp has migrations for (each file is named after its id)."""
    return frozenset(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))
