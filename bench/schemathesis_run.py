"""The long schemathesis run against a real `abp serve`: every check, hundreds of examples per operation.

What it does: a throwaway ABP_HOME with two jobs (one COMPLETED through a real executor, one
CREATED), `abp serve` on a free loopback port, the dashboard's CSRF token read from its page, then
`schemathesis run /openapi.json` with the token header. The SSE streams are excluded (they never end
by design; tests/integration/test_web_live.py covers them). Prints schemathesis's summary and how
many requests got a 5xx (the issue's bar: none).

schemathesis is not needed by the project itself; install it anywhere and name it:
    python3 -m venv /tmp/st-venv && /tmp/st-venv/bin/pip install schemathesis
    python bench/schemathesis_run.py --schemathesis /tmp/st-venv/bin/schemathesis
    python bench/schemathesis_run.py --checks not_a_server_error --examples 300   # 5xx hunt only
The bounded version in the test suite is tests/integration/test_web_schemathesis.py.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


#: Real ids in `{job}` and `{unit}` most of the time: a random string is a 404 that reaches nothing.
CONFIG = """[dictionaries.jobs]
values = ["{job}", "done", "waiting", "last"]

[dictionaries.units]
values = ["1", "2", "3"]

[parameters]
"path.job" = {{ dictionary = "jobs", probability = 0.8 }}
"path.unit" = {{ dictionary = "units", probability = 0.8 }}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"abp serve did not answer {url}") from None
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemathesis", default=shutil.which("schemathesis") or "schemathesis")
    parser.add_argument("--examples", type=int, default=300, help="max examples per operation")
    parser.add_argument("--checks", default="all")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with c.temp_home() as data:
        work = data / "work"
        work.mkdir()
        (work / "items.csv").write_text("name,text\nAda,hello\nBob,world\nCy,again\n")
        done, _ = c.create_job("--name", "done", "--csv", "items.csv", "--command", "echo {{ name }}", cwd=work)
        c.abp("start", str(done), "--skip-test", cwd=work)
        for _ in range(120):  # the executor finishes three echo units in a moment
            if json.loads(c.abp("status", str(done), "--json", cwd=work)[0])["status"] == "COMPLETED":
                break
            time.sleep(0.5)
        c.create_job("--name", "waiting", "--csv", "items.csv", "--command", "echo {{ text }}", cwd=work)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "agentic_batch", "serve", "--port", str(port)], cwd=work)
        try:
            page = wait_for(f"{url}/")
            token = re.search(r'name="abp-csrf" content="([^"]+)"', page)
            if token is None:
                raise SystemExit("no CSRF token on the dashboard page")
            config = data / "schemathesis.toml"
            config.write_text(CONFIG.format(job=done))
            command = [args.schemathesis, "--config-file", str(config), "run", f"{url}/openapi.json",
                       "--checks", args.checks,
                       "--header", f"X-ABP-CSRF: {token.group(1)}", "--max-examples", str(args.examples),
                       "--seed", str(args.seed), "--continue-on-failure", "--exclude-path-regex", "/stream$",
                       "--request-timeout", "60", "--no-color"]
            started = time.perf_counter()
            result = subprocess.run(command, cwd=data, capture_output=True, text=True)
            seconds = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
        start = result.stdout.find("FAILURES")  # each failure with a curl line that reproduces it
        if start < 0:
            start = result.stdout.find("SUMMARY")
        print(result.stdout[max(start - 40, 0):].strip())
        server_errors = len(re.findall(r"^\[5\d\d\]", result.stdout, flags=re.MULTILINE))
        print(f"\nschemathesis exit {result.returncode} after {seconds:.0f} s; responses shown with a 5xx: "
              f"{server_errors}")
        if result.stderr.strip():
            print(result.stderr.strip()[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()
