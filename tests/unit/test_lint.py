"""Lint is part of the test suite, so the README's one test command also keeps the code ruff-clean
and mypy-clean.

ruff and mypy run as `sys.executable -m ...`, the ones installed with the `dev` extra next to pytest,
over the same trees CI checks (mypy with its configuration in pyproject.toml); each test is skipped
(with the reason) only where its tool is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ["agentic_batch", "tests", "bench"]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_check_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *TREES], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ruff check {' '.join(TREES)} found problems:\n{done.stdout}{done.stderr}"


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[dev]')")
def test_mypy_is_clean() -> None:
    """The package's types are its contracts: `mypy agentic_batch` reports nothing (an unneeded
    `# type: ignore` counts too: warn_unused_ignores)."""
    done = subprocess.run([sys.executable, "-m", "mypy", "agentic_batch"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"mypy agentic_batch found problems:\n{done.stdout}{done.stderr}"


def test_status_names_have_one_declaration() -> None:
    """A bare status literal in the package would bypass `JobStatus`/`UnitStatus` (issue 12): the
    states module declares them, migrations keep their frozen SQL, and nothing else spells one."""
    pattern = re.compile(r"[\"'](PENDING|RUNNING|COMPLETED|FAILED|CANCELLED|CREATED|TESTING|PAUSED|CREATING)[\"']")
    package = ROOT / "agentic_batch"
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel == "states.py" or rel.startswith("store/migrations/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith(('"""', "#")):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "use JobStatus/UnitStatus from agentic_batch.states:\n" + "\n".join(found)
