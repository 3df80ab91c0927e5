"""`SCHEMA_REVISION` is the Alembic head, so a new migration without a bump fails here.

`Database` skips Alembic when the database already says `SCHEMA_REVISION` (a fast CLI open); a
migration added without bumping it would be silently skipped on every existing database."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from agentic_batch.store import db


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    return ScriptDirectory.from_config(config)


def test_schema_revision_is_the_single_alembic_head() -> None:
    heads = _scripts().get_heads()
    assert len(heads) == 1, f"the migrations have several heads {heads}: merge them"
    assert heads[0] == db.SCHEMA_REVISION, (
        f"store/revision.py SCHEMA_REVISION is {db.SCHEMA_REVISION!r} but the newest migration is {heads[0]!r}: bump it"
    )

