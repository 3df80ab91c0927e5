"""An isolated job's changes in the dashboard, in headless Chromium against `abp serve`: the unit page
shows the diff (a block per file, +/- coloured, agent text inert) with accept/reject, and the job
page's Changes view lists every unit's files, +/- and review mark, marks units and applies the
accepted ones onto the job's applied branch (again: nothing new)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from tests.e2e.test_dashboard_browser import CHROMIUM, browser, open_page, server, sync_playwright  # noqa: F401
from tests.fixtures.git_repos import isolated_job, make_repo, run_units, sh, shared_with

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)"),
]

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>\x1b[31m'


def test_unit_diff_and_the_changes_view(server: str, browser: Any, orch: Orchestrator,  # noqa: F811
                                        tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    job = isolated_job(orch, repo)
    run_units(orch, job, {1: {"a.py": "a = 2\n", "b.py": HOSTILE + "\n"},
                          2: {"shared.txt": shared_with(4, "edited by 2")},
                          3: {"c.py": "c = 3\n"}})
    problems: list[str] = []
    page = open_page(browser, problems, height=1400)
    page.goto(f"{server}/jobs/{job}/units/1")
    panel = page.locator("#unit-changes")
    panel.locator(".diff-file").first.wait_for()
    assert panel.locator(".diff-name").all_inner_texts() == ["a.py", "b.py"]
    assert "2 file(s), +2 −2" in page.locator("#changes-summary").inner_text()
    added = panel.locator("pre.diff span.add")
    assert added.all_inner_texts() == ["+a = 2", "+" + HOSTILE]  # as text, not markup
    assert page.evaluate("window.__pwned") is None and panel.locator("img, script").count() == 0
    green = added.first.evaluate("n => getComputedStyle(n).backgroundColor")
    red = panel.locator("pre.diff span.del").first.evaluate("n => getComputedStyle(n).backgroundColor")
    assert green == "rgb(230, 255, 236)" and red == "rgb(255, 235, 233)"
    assert panel.locator("pre.diff span.hunk").count() == 2 and panel.locator("pre.diff span.meta").count() >= 8
    page.screenshot(path=str(tmp_path / "unit-diff.png"), full_page=True)
    panel.locator('button[data-review="accepted"]').click()
    page.locator("#review-state .badge.review-accepted").wait_for()
    assert orch.diff(job, 1).review == "accepted"

    page.goto(f"{server}/jobs/{job}")
    rows = page.locator("#changes-body tr")
    rows.nth(4).wait_for()
    assert rows.count() == 5
    assert "(3 unit(s) changed 4 file(s), +4 −4)" in page.locator("#changes-count").inner_text()
    first = rows.nth(0).locator("td").all_inner_texts()
    assert first[:7] == ["#1", "a.py", "COMPLETED", "2", "+2 −2", "", "accepted"]
    assert rows.nth(3).locator("td").all_inner_texts()[3:5] == ["—", ""]  # unit 4 changed nothing
    page.locator("#changes-panel").screenshot(path=str(tmp_path / "changes-view.png"))
    rows.nth(2).locator('button[data-review="rejected"]').click()
    page.locator('#changes-body tr[data-unit="3"] .badge.review-rejected').wait_for()
    assert {u.number: u.review for u in orch.changes(job).units} == {1: "accepted", 2: None, 3: "rejected",
                                                                    4: None, 5: None}

    # Apply accepted: the REST apply (same CSRF rules as the marks) of units 1 and 2 onto abp/<job>/applied
    rows.nth(1).locator('button[data-review="accepted"]').click()
    page.locator('#changes-body tr[data-unit="2"] .badge.review-accepted').wait_for()
    result = page.locator("#apply-result")
    page.locator("#apply-accepted").click()
    result.wait_for()
    branch = f"abp/{job}/applied"
    head = sh(repo, "rev-parse", branch)
    assert result.inner_text() == f"Made {branch} (head {head[:12]}). Applied #1, #2."
    assert sh(repo, "show", f"{branch}:a.py") == "a = 2" and sh(repo, "show", f"{branch}:c.py") == "c = 1"
    assert sh(repo, "show", f"{branch}:shared.txt").splitlines()[4] == "edited by 2"
    page.locator("#apply-result").evaluate("n => { n.hidden = true; }")
    page.locator("#apply-accepted").click()  # again: idempotent
    page.locator("#apply-result:not([hidden])").wait_for()
    assert result.inner_text() == f"Updated {branch} (head {head[:12]}). Already there: #1, #2."
    assert sh(repo, "rev-parse", branch) == head and sh(repo, "status", "--porcelain") == ""
    page.locator("#changes-panel").screenshot(path=str(tmp_path / "changes-applied.png"))
    assert problems == []
