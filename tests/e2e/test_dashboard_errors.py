"""The job page's "Failures by cause" panel in headless Chromium, served by the real `abp serve`, with
units failed by a real executor: one row per cause, HTML in errors shown as text (never run), and a
group's Retry button re-running that group only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentic_batch.spec import JobSpec
from tests.e2e.test_dashboard_browser import browser, open_page, pytestmark, server  # noqa: F401
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.web_funcs import ref


def test_failures_panel_groups_escapes_and_retries_one_group(server: str, browser: Any, orch: Any,  # noqa: F811
                                                             workdir: Path, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps({"i": i, "fixed": str(fixed)}) + "\n" for i in range(12)))
    job = orch.create(JobSpec(name="causes", source={"kind": "jsonl", "path": str(path), "key": "i"}, worker="python",
                              worker_options={"function": ref("fail_hostile")}, max_retries=0), cwd=workdir).job_id
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"FAILED"}, timeout=60)

    problems: list[str] = []
    page = open_page(browser, problems, height=1400)
    page.goto(f"{server}/jobs/{job}")
    panel = page.locator("#errors-panel")
    panel.wait_for(state="visible")
    rows = page.locator("#errors-body tr")
    assert rows.count() == 3
    assert "(12 failed unit(s) in 3 group(s))" in page.locator("#errors-count").inner_text()
    text = panel.inner_text()
    assert "<img src=x onerror=" in text and "item <n> at <path>" in text  # the signature, shown as text
    assert "cannot open <str>" in text
    page.locator("#errors-body details").nth(1).locator("summary").click()
    assert "<script>window.__pwned='example'</script> bad value '" in panel.inner_text()  # the example, as text
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#errors-panel img, #errors-panel script").count() == 0

    fixed.write_text("")
    row = page.locator("#errors-body tr", has=page.locator("code", has_text="cannot open <str>"))
    row.locator('button[data-action="retry-group"]').click()
    dialog = page.locator("#confirm-dialog")
    assert "Retry the 4 unit(s) that failed this way?" in dialog.inner_text()
    dialog.locator("button[data-confirm-ok]").click()
    wait_until(lambda: orch.status(job).completed == 4 and orch.status(job).status == "FAILED", 60,
               "the group to run again")
    final = orch.status(job)
    assert final.failed == 8 and final.completed == 4
    page.wait_for_function("() => document.querySelectorAll('#errors-body tr').length === 2", timeout=30_000)
    assert "cannot open" not in panel.inner_text()
    assert page.evaluate("window.__pwned") is None
    assert not problems, problems
