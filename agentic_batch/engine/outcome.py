"""What the engine does to every attempt's outcome before it becomes a result, whatever the worker.

- An exception anywhere in the attempt (rendering, the worker, schema validation, building the
  result) becomes that unit's error: permanent unless its type is known to be transient.
- Output beyond the job's `max_output_bytes` is cut to its head and tail; the whole text goes to a
  file under the job's directory and the marker in the output says where.
- Text the store could not hold (NUL bytes, lone surrogates) is replaced with U+FFFD.

Each change is said in the unit: the returned notes become a `note` event and a job-log line.
"""

from __future__ import annotations

import errno
import traceback
from dataclasses import replace
from pathlib import Path

from agentic_batch.store.storable import storable_text, unstorable_count
from agentic_batch.textcap import keep_head_and_tail, spill_and_cap
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitOutcome

#: Errors are fed back to the next attempt and shown in lists: cap them harder than output.
MAX_ERROR_BYTES = 64 * 1024
_TRANSIENT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM, errno.ENOSPC}


def crash_outcome(exc: BaseException, phase: str) -> UnitOutcome:
    """An exception that escaped one part of an attempt, as the unit's error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 500:
        text = text[:500] + "…"
    known_transient = isinstance(exc, (ConnectionError, TimeoutError)) or (
        isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS)
    kind = (FailureKind.connection if isinstance(exc, ConnectionError)
            else FailureKind.timeout if isinstance(exc, TimeoutError) else FailureKind.crashed)
    message = f"{phase} raised {type(exc).__name__}" + (f": {text}" if text else "")
    return UnitOutcome.failure(message, ErrorClass.retryable if known_transient else ErrorClass.permanent, kind)


def short_traceback(exc: BaseException, limit: int = 6) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-limit)).rstrip()


def worker_output_cap(max_output_bytes: int) -> int:
    """The cap a worker bounds its buffer to: the job's, less room for the worker's own marker, so
    that output a worker already cut is not cut again here."""
    return max_output_bytes - min(1024, max_output_bytes // 4)


def output_file(job_dir: Path, unit_id: int | None, attempt: int) -> Path:
    """Where an attempt's whole output goes when it is longer than the cap."""
    return job_dir / "outputs" / f"{unit_id if unit_id is not None else 'reduce'}-{attempt}.txt"


def bound_outcome(outcome: UnitOutcome, max_output_bytes: int, spill_path: Path) -> tuple[UnitOutcome, list[str]]:
    """Cap and clean the outcome's text fields; returns the new outcome and notes saying what changed."""
    notes: list[str] = []
    output, error = outcome.output, outcome.error
    if output:
        output, cut = spill_and_cap(output, max_output_bytes, spill_path)
        if cut:
            kept = "kept" if spill_path.exists() else "could not be written"
            notes.append(f"output was longer than the job's max_output_bytes ({max_output_bytes}): {cut} bytes "
                         f"cut from the middle; the whole output {kept} in {spill_path}")
    if error:
        error, cut = keep_head_and_tail(error, MAX_ERROR_BYTES)
        if cut:
            notes.append(f"error text cut to {MAX_ERROR_BYTES} bytes ({cut} bytes cut from the middle)")
    for name, text in (("output", output), ("error", error)):
        bad = unstorable_count(text) if text else 0
        if bad:
            notes.append(f"{name} held {bad} NUL byte(s) or invalid character(s) the store cannot keep; "
                         "each was replaced with U+FFFD")
    if output is not outcome.output or error is not outcome.error or notes:
        outcome = replace(outcome, output=storable_text(output) if output else output,
                          error=storable_text(error) if error else error)
    return outcome, notes
