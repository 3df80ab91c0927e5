"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright), served by the
real `abp serve` command, with jobs run by real executors. Takes the README's screenshots: into the
test's temporary directory, or over docs/screenshots with ABP_UPDATE_SCREENSHOTS=1 (so a test run
never dirties the checkout)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentic_batch.spec import JobSpec
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.web_funcs import ref

CHROMIUM = Path("/usr/bin/chromium")
DOC_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)"),
]


@pytest.fixture
def server(abp_home: Path, workdir: Path) -> Iterator[str]:
    """`abp serve` on a free port, as a user starts it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ABP_HOME": str(abp_home)}
    proc = subprocess.Popen([sys.executable, "-m", "agentic_batch", "serve", "--port", str(port)], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"abp serve exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 30, "abp serve to answer")
    yield url
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def open_page(browser: Browser, problems: list[str], height: int = 900) -> Page:
    """A page that records script errors and console errors (a CSP violation is one)."""
    page = browser.new_page(viewport={"width": 1360, "height": height})
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    return page


def confirm(page: Page, url: str, action: str, question: str) -> None:
    """Open `url`, click the job action button, check the confirmation asks `question`, confirm."""
    page.goto(url)
    page.locator(f'#job-actions button[data-action="{action}"]').click()
    dialog = page.locator("#confirm-dialog")
    assert question in dialog.inner_text()
    dialog.locator("button[data-confirm-ok]").click()


def make_job(orch: Any, workdir: Path, name: str, func: str, rows: list[dict[str, Any]], **kw: Any) -> int:
    path = workdir / f"{name}.jsonl"
    path.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    spec = JobSpec(name=name, source={"kind": "jsonl", "path": str(path), "key": "name"}, worker="python",
                   worker_options={"function": ref(func)}, **kw)
    return orch.create(spec, cwd=workdir).job_id


def test_dashboard_follows_and_steers_a_running_job(server: str, browser: Browser, orch: Any, workdir: Path,
                                                    tmp_path: Path) -> None:
    done = make_job(orch, workdir, "ticket-triage", "chatty",
                    [{"name": f"ticket-{i}", "fail": i % 4 == 1, "sleep": 0.02} for i in range(8)], max_retries=0)
    orch.start(done, skip_test=True)
    wait_status(orch, done, {"FAILED"})
    # The last units wait while `hold` exists: however slow the host makes the steps below, the job is
    # still RUNNING when the test stops it (CI once saw it finish first, and never pause).
    hold = workdir / "hold"
    hold.touch()
    job = make_job(orch, workdir, "docstrings", "chatty",
                   [{"name": f"module_{i:03d}.py", "sleep": 0.8, **({"hold": str(hold)} if i >= 190 else {})}
                    for i in range(200)], concurrency=3,
                   prompt="Add docstrings to {{ name }}")
    orch.start(job, skip_test=True)
    fresh = make_job(orch, workdir, "summaries", "chatty", [{"name": "a"}, {"name": "b"}],
                     prompt="Summarise {{ name }}")
    wait_until(lambda: orch.status(job).completed >= 3, 60, "a few units to complete")
    problems: list[str] = []
    shots = DOC_SCREENSHOTS if os.environ.get("ABP_UPDATE_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    page = open_page(browser, problems)
    page.goto(server)
    row = page.locator("tr", has=page.locator("a", has_text="docstrings"))
    row.locator(".badge", has_text="RUNNING").wait_for()
    first = row.locator(".bar-label").inner_text()
    page.wait_for_function("([sel, before]) => document.querySelector(sel).innerText !== before",
                           arg=[f'tr[data-job-id="{job}"] .bar-label', first], timeout=30_000)  # live, no reload
    page.screenshot(path=str(shots / "jobs.png"))

    page = open_page(browser, problems, height=1500)
    page.goto(f"{server}/jobs/{job}")
    page.evaluate("window.__sameDocument = true")
    label = page.locator("#job-progress-label")
    before = label.inner_text()
    page.wait_for_function("before => document.querySelector('#job-progress-label').innerText !== before",
                           arg=before, timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True  # progress advanced without a reload
    page.locator("#active-body tr").first.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('#chart-throughput rect.bar-ok')]"
                           ".some(r => Number(r.getAttribute('height')) > 0)")
    assert page.locator("#units-body tr").count() == 50  # the first page
    page.select_option('#unit-filters select[name="status"]', "completed")
    page.wait_for_function("() => [...document.querySelectorAll('#units-body .badge')]"
                           ".every(b => b.textContent === 'COMPLETED')")
    page.select_option('#unit-filters select[name="status"]', "")
    page.locator("#units-body tr").nth(49).wait_for()
    page.screenshot(path=str(shots / "job.png"))

    unit = orch.units_page(job, status="completed", limit=1).items[0]
    unit_page = open_page(browser, problems)
    unit_page.goto(f"{server}/jobs/{job}/units/{unit.number}")
    timeline = unit_page.locator("#timeline")
    timeline.locator("li.kind-tool_use", has_text="Bash").wait_for()
    assert timeline.locator("li.kind-assistant .md strong").first.inner_text() == unit.key  # markdown rendered
    timeline.locator("li.kind-tool_use summary").click()
    assert "wc -w" in timeline.locator("li.kind-tool_use pre").inner_text()
    assert unit_page.locator("#unit-status").inner_text() == "COMPLETED"
    unit_page.screenshot(path=str(shots / "unit.png"), full_page=True)

    upcoming = orch.units_page(job, status="pending", limit=1, offset=12).items[0]  # starts in a few seconds
    live_unit = open_page(browser, problems)
    live_unit.goto(f"{server}/jobs/{job}/units/{upcoming.number}")
    assert live_unit.locator("#unit-status").inner_text() in ("PENDING", "RUNNING")
    live_unit.locator('#unit-status[data-status="COMPLETED"]').wait_for(timeout=60_000)  # no reload: live
    live_unit.locator("#timeline li.kind-tool_result").wait_for()  # its conversation arrived as it ran
    assert "42" in live_unit.locator("#unit-output").inner_text()
    live_unit.close()

    confirm(test_first := open_page(browser, problems), f"{server}/jobs/{fresh}", "start", "Run the first unit")
    panel = test_first.locator("#test-panel")
    panel.locator(".md strong", has_text="42").wait_for(timeout=30_000)  # the test unit's answer, rendered
    assert "null" not in panel.inner_text() and test_first.locator("#job-status").inner_text() == "TESTING"
    panel.locator('button[data-action="approve"]').click()
    test_first.locator("#confirm-dialog button[data-confirm-ok]").click()
    test_first.locator('#job-status[data-status="COMPLETED"]').wait_for(timeout=60_000)
    test_first.close()

    page.locator('#job-actions button[data-action="stop"]').click()
    dialog = page.locator("#confirm-dialog")
    assert "Stop this job?" in dialog.inner_text()
    dialog.locator("button[data-confirm-ok]").click()
    hold.unlink()  # held units in flight (if the job got that far) may finish now, so the job can pause
    page.locator('#job-status[data-status="PAUSED"]').wait_for(timeout=60_000)
    assert orch.status(job).status == "PAUSED"
    assert page.locator('#job-actions button[data-action="resume"]').is_visible()
    assert problems == []


def test_agent_output_never_runs_as_script(server: str, browser: Browser, orch: Any, workdir: Path) -> None:
    job = make_job(orch, workdir, "hostile", "hostile", [{"name": "evil"}])
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED"})
    unit = orch.units_page(job).items[0]
    problems: list[str] = []
    page = open_page(browser, problems)
    for path in (f"/jobs/{job}/units/{unit.number}", f"/jobs/{job}", "/"):
        page.goto(server + path)
        page.wait_for_timeout(300)
        assert page.evaluate("window.__pwned") is None, path
        assert page.title() != "pwned"
    page.goto(f"{server}/jobs/{job}/units/{unit.number}")
    page.locator("#timeline li.kind-assistant").wait_for()
    text = page.locator("body").inner_text()
    assert "<script>window.__pwned = 'script'" in text and "<img src=x onerror=" in text  # shown, escaped
    assert "[click me](javascript:" in text  # a javascript: link stays text
    assert page.locator("main script:not(#initial-data), main img, main iframe").count() == 0
    assert page.locator('a[href^="javascript:"]').count() == 0
    assert page.locator('#timeline a[href="https://example.com/docs"]').count() == 1  # http(s) links work
    assert page.evaluate("window.__pwned") is None
    # The renderer itself, on more hostile inputs: nothing but our own tags and safe links come out.
    attacks = ["<svg onload=alert(1)>", "[x](javascript:alert(1))", "[x](https://a.example/\" onclick=\"alert(1))",
               "```\n</code></pre><script>alert(1)</script>\n```", "**<b onmouseover=alert(1)>x</b>**",
               "`<script>`", "https://a.example/<script>", "[a](data:text/html,<script>alert(1)</script>)",
               "> <iframe src=javascript:alert(1)>", "- <a href=javascript:alert(1)>x</a>", "\u0000 1 \u0000"]
    report = page.evaluate("""attacks => attacks.map(a => {
        const node = ABP.markdown(a);
        const bad = [...node.querySelectorAll('*')].filter(el =>
            !['P','PRE','CODE','STRONG','EM','A','UL','OL','LI','BR','BLOCKQUOTE','H3','H4','H5','H6'].includes(el.tagName)
            || [...el.attributes].some(at => at.name.startsWith('on'))
            || (el.tagName === 'A' && !/^https?:\\/\\//.test(el.getAttribute('href'))));
        return bad.map(el => el.outerHTML);
    })""", attacks)
    assert report == [[] for _ in attacks], report
    assert problems == []
