"""Which command lines start a warm executor, and what it is told to prepare (engine/warm.py)."""

from __future__ import annotations

import pytest

from agentic_batch.engine.warm import hints


@pytest.mark.parametrize(("args", "expected"), [
    (["start", "7", "--skip-test"], ["--job", "7"]),
    (["start", "7", "--approve", "--json"], ["--job", "7"]),
    (["start", "last", "--skip-test"], []),                  # not an id: warm up the engine only
    (["start", "7"], None),                                  # test-first: runs one unit here, launches nothing
    (["start", "7", "--reject"], None),
    (["start", "7", "--skip-test", "--help"], None),
    (["resume", "3"], ["--job", "3"]),
    (["retry", "3"], ["--job", "3"]),
    (["run", "--name", "x", "--worker", "claude", "--yes"], ["--worker", "claude"]),
    (["run", "--name", "x", "--worker=openai"], ["--worker", "openai"]),
    (["run", "--name", "x"], ["--worker", "command"]),       # the JobSpec default
    (["status", "7"], None),
    (["executor", "7"], None),
    ([], None),
])
def test_hints(args: list[str], expected: list[str] | None) -> None:
    assert hints(args) == expected


def test_skip_test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_SKIP_TEST", "1")
    assert hints(["start", "7"]) == ["--job", "7"]
