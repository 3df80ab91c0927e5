"""Settings read from the environment: where the store lives and a few engine tunables.

Read fresh on each call (not cached at import) so tests and the detached executor, which inherit the
environment of whoever started them, always agree on ABP_HOME and ABP_DB_URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        from agentic_batch.errors import InvalidSpec

        raise InvalidSpec(f"{name}={raw!r} is not a number") from None


def env_flag(name: str, default: bool = False) -> bool:
    """A yes/no variable: 1/true/yes/on; unset or empty gives `default`. Standard library only, so the
    CLI can ask before it imports anything heavy (engine/warm.py)."""
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    skip_test: bool
    #: Length of a unit lease; heartbeats renew it every third of this.
    lease_seconds: float
    #: How long a stopping executor lets in-flight units finish before cancelling them.
    stop_grace_seconds: float
    #: How long a cancelled attempt may take to clean up before its unit is released anyway.
    cancel_grace_seconds: float
    #: Base and cap of the exponential retry backoff (full jitter).
    retry_base_seconds: float
    retry_max_seconds: float
    #: How long the executor waits out an unavailable store (outage, lock, full disk) before it pauses
    #: the job with reason "store".
    store_outage_seconds: float = 300.0
    #: How long an agent that has reported its result may take to exit on its own, in the background
    #: while its unit's slot runs the next one, before its processes are killed (engine/runner.py).
    exit_grace_seconds: float = 10.0

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def job_dir(self, job_id: int) -> Path:
        return self.home / "jobs" / str(job_id)


def load_settings() -> Settings:
    home = Path(os.environ.get("ABP_HOME") or Path.home() / ".agentic-batch").expanduser().resolve()
    db_url = os.environ.get("ABP_DB_URL") or f"sqlite:///{home / 'batch.db'}"
    return Settings(
        home=home,
        db_url=db_url,
        skip_test=env_flag("ABP_SKIP_TEST"),
        lease_seconds=float_env("ABP_LEASE_SECONDS", 60.0),
        stop_grace_seconds=float_env("ABP_STOP_GRACE_SECONDS", 30.0),
        cancel_grace_seconds=float_env("ABP_CANCEL_GRACE_SECONDS", 30.0),
        retry_base_seconds=float_env("ABP_RETRY_BASE_SECONDS", 2.0),
        retry_max_seconds=float_env("ABP_RETRY_MAX_SECONDS", 300.0),
        store_outage_seconds=float_env("ABP_STORE_OUTAGE_SECONDS", 300.0),
        exit_grace_seconds=float_env("ABP_EXIT_GRACE_SECONDS", 10.0),
    )
