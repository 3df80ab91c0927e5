"""Every test gets its own ABP_HOME (and so its own SQLite store), fast retry and lease settings.

Detached executors inherit the environment, so the settings reach them too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.abp import reap_stray_executors


@pytest.fixture(autouse=True)
def abp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "abp-home"
    monkeypatch.setenv("ABP_HOME", str(home))
    for name in ("ABP_DB_URL", "ABP_SKIP_TEST", "ABP_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABP_RETRY_BASE_SECONDS", "0.05")
    monkeypatch.setenv("ABP_RETRY_MAX_SECONDS", "0.5")
    monkeypatch.setenv("ABP_STOP_GRACE_SECONDS", "10")
    monkeypatch.setenv("ABP_LEASE_SECONDS", "30")
    yield home
    reap_stray_executors(home)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory to create jobs from (the job's workdir), made the cwd."""
    path = tmp_path / "work"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def orch(abp_home: Path):  # type: ignore[no-untyped-def]
    from agentic_batch.service import Orchestrator

    orchestrator = Orchestrator()
    yield orchestrator
    orchestrator.store.close()


def postgres_url() -> str | None:
    return os.environ.get("ABP_TEST_POSTGRES_URL") or None
