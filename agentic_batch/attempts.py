"""What one attempt at a unit produced and cost: declared once, here.

The same fields travel from the worker (`UnitOutcome`) through the engine's decision (`UnitResult`,
what the store writes) to the stored unit (`UnitRecord`, what every interface reads); each of the three
is an `AttemptFields` plus what only it knows (the outcome its retry hint, the result its next state,
the record its identity and lease). A module of its own with no imports from the package, so workers
and the store share it without depending on each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, kw_only=True)
class AttemptFields:
    #: The agent's final text.
    output: str | None = None
    #: Structured output (the JSON parsed from `output` when the job has an output schema).
    data: Any = None
    #: Set when the attempt failed.
    error: str | None = None
    #: How the retry loop treats the error: "retryable", "quota" or "permanent" (`ErrorClass`).
    error_class: str | None = None
    #: What went wrong, as data (`FailureKind`: "rate_limited", "schema_invalid", "timeout", ...), set
    #: by whoever knew it (the worker from an HTTP status or an exit code, the engine for timeouts and
    #: schema checks); None when nobody could tell.
    error_kind: str | None = None
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    #: Agent turns (model calls) the attempt took.
    turns: int = 0
    #: The agent's session, to resume or inspect it (the Claude CLI's session id).
    session_id: str | None = None
    #: With `--isolate worktree`: what the attempt changed (branch, commit, files, +/-; see
    #: isolation.Changes.stats), the patch against the job's base, and the verify command's output.
    changes: dict[str, Any] | None = None
    patch: str | None = None
    verify_output: str | None = None
    #: A process worker's (`command`) exit status and the two streams, apart: its exit code
    #: (negative: killed by that signal), stdout and stderr as captured. `output` stays what the
    #: unit's result is (stdout, without its last newline, for the command worker).
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None

    def attempt_fields(self) -> dict[str, Any]:
        """These fields by name (to carry them from one of the three types to another)."""
        return {name: getattr(self, name) for name in ATTEMPT_FIELDS}


#: The names of `AttemptFields`, in declaration order.
ATTEMPT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AttemptFields))
