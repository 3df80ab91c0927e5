"""`python -m agentic_batch.service.test_process JOB`: a job's test run in a detached process.

`Orchestrator.begin_test` starts it for callers that must not block for a whole agent run (the MCP
server: requests time out, and a client may shut the server down mid-test). Output goes to the job's
test.log; everything a caller needs is in the store.
"""

from __future__ import annotations

import signal
import sys

from agentic_batch.errors import AbpError
from agentic_batch.service.orchestrator import Orchestrator
from agentic_batch.service.test_run import TestInterrupted


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m agentic_batch.service.test_process JOB_ID", file=sys.stderr)
        return 2
    try:
        report = Orchestrator().test(int(argv[0]))
    except TestInterrupted as exc:
        print(f"test run of job {argv[0]} interrupted by {exc.signame}; the unit is PENDING again", flush=True)
        return 128 + int(getattr(signal, exc.signame))
    except AbpError as exc:
        print(f"error: {exc.one_line()}", flush=True)
        return 1
    print(f"test run of job {argv[0]}: unit {report.number} {report.status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
