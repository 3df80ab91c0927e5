"""Migration 0013 on a store that already has failed units (SQLite and PostgreSQL): each gets its error
signature, so `abp errors` groups failures from before the upgrade too."""

from __future__ import annotations

import sqlalchemy as sa

from agentic_batch.service import Orchestrator
from agentic_batch.store import open_store
from tests.fixtures.stores import store_url  # noqa: F401  (fixture)


def _signature_migration() -> str:
    """The revision just before the one that adds units.error_signature, wherever it sits in the chain."""
    from alembic.script import ScriptDirectory

    from agentic_batch.store.db import _MIGRATIONS

    for script in ScriptDirectory(str(_MIGRATIONS)).walk_revisions():
        if "units.error_signature" in (script.doc or "") + (script.longdoc or ""):
            return str(script.down_revision)
    raise AssertionError("no error-signature migration found")


def test_failed_units_of_an_older_store_get_their_signature(store_url: str) -> None:  # noqa: F811
    from alembic import command
    from alembic.config import Config

    from agentic_batch.store.db import _MIGRATIONS

    engine = sa.create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, _signature_migration())
        job = conn.execute(sa.text(
            "INSERT INTO jobs (name, status, source, worker, worker_options, concurrency, max_retries, "
            "timeout_s, priority, workdir, created_at) VALUES ('old', 'FAILED', '{}', 'python', '{}', 1, 0, "
            "10, 1, '/tmp', 0) RETURNING id")).scalar_one()
        rows = [(n, "FAILED", f"cannot open '/data/{n}.json'") for n in (1, 2, 3)]
        rows += [(4, "FAILED", "KeyError: 'x'"), (5, "COMPLETED", None)]
        for number, status, error in rows:
            conn.execute(sa.text("INSERT INTO units (job_id, seq, number, key, payload, status, error, error_class) "
                                 "VALUES (:j, :n, :n, :k, '{}', :s, :e, 'permanent')"),
                         {"j": job, "n": number, "k": f"k{number}", "s": status, "e": error})
    engine.dispose()

    store = open_store(store_url)  # migrates to the head
    try:
        summary = Orchestrator(store=store).error_summary(job)
        assert [(g.count, g.signature) for g in summary.groups] == [(3, "cannot open <str>"), (1, "KeyError: <str>")]
        assert [u.number for u in summary.groups[0].units] == [1, 2, 3]
    finally:
        store.close()
