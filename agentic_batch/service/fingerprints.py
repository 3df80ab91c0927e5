"""A unit's fingerprint: a hash of everything its answer depends on, the key of the result cache.

Two units with the same fingerprint would be asked the same thing by the same agent, so the second
can take the first one's answer (`--cache`). What goes in:

- the worker kind and its options, model included, except the few that cannot change an answer
  (`NOT_ANSWER_OPTIONS`: where the API key lives, prices, retry exit codes, process isolation);
- the job options that shape the answer: the output schema and the bytes of output kept;
- the rendered prompt (as the first attempt renders it: feedback added to a retry is not part of
  the question);
- for the `command` and `python` workers, the item itself (they receive it, not only the prompt), the
  directory they run in and, for a python function given as a file, that file's content;
- for a `files` source, the file's content hash: the same path with new content is a new question.

What stays out: concurrency, retries, timeouts, priority, budget and rate limits (they change how a
unit is run, never what it answers). A prompt that cannot be rendered, or a file that cannot be read,
gives no fingerprint: the unit simply runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from agentic_batch.errors import AbpError
from agentic_batch.prompts import render
from agentic_batch.store import JobRecord, UnitRecord

#: Bumped when what goes into a fingerprint changes, so old entries stop matching instead of lying.
FINGERPRINT_VERSION = "abp-cache-1"

#: Worker options that never change an answer, by worker kind.
NOT_ANSWER_OPTIONS: dict[str, frozenset[str]] = {
    "openai": frozenset({"api_key_env", "price_in", "price_out"}),
    "anthropic": frozenset({"api_key_env", "price_in", "price_out"}),
    "command": frozenset({"retry_exit_codes"}),
    "python": frozenset({"isolate_python"}),
    "claude": frozenset(),
}

#: Workers that receive the item itself (so it is part of the question) and run in the job's workdir.
ITEM_WORKERS = frozenset({"command", "python"})

_CHUNK = 1 << 20


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes, read in chunks; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _function_file(function: str, workdir: str) -> str | None:
    """The source file of a python worker's `module:function` or `path/file.py:function`."""
    target = function.rsplit(":", 1)[0]
    if target.endswith(".py"):
        path = Path(target) if Path(target).is_absolute() else Path(workdir) / target
        return str(path)
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.origin not in (None, "built-in", "frozen") else None


class JobFingerprint:
    """The job's share of its units' fingerprints, computed once; `unit()` adds each unit's own."""

    def __init__(self, job: JobRecord) -> None:
        self.job = job
        skip = NOT_ANSWER_OPTIONS.get(job.worker, frozenset())
        options = {k: v for k, v in (job.worker_options or {}).items() if k not in skip}
        shared: dict[str, Any] = {"v": FINGERPRINT_VERSION, "worker": job.worker, "options": options,
                                  "output_schema": job.output_schema, "max_output_bytes": job.max_output_bytes}
        self.item_worker = job.worker in ITEM_WORKERS
        if self.item_worker:
            shared["workdir"] = job.workdir
            function = options.get("function")
            if job.worker == "python" and isinstance(function, str):
                source = _function_file(function, job.workdir)
                shared["function_file"] = file_digest(source) if source else None
        self.files = job.source.get("kind") == "files"
        self._prefix = hashlib.sha256(_canonical(shared)).digest()

    def prompt(self, unit: UnitRecord) -> str | None:
        """The unit's prompt as its first attempt renders it (engine/runner.py renders the same way)."""
        if not self.job.prompt_template:
            return None
        return render(self.job.prompt_template, unit.payload,
                      unit={"id": unit.id, "key": unit.key, "seq": unit.seq, "attempt": 1},
                      job={"id": self.job.id, "name": self.job.name})

    def unit(self, unit: UnitRecord) -> tuple[str | None, str | None]:
        """(fingerprint, rendered prompt); the fingerprint is None when the unit cannot have one."""
        try:
            prompt = self.prompt(unit)
        except AbpError:
            return None, None
        digest = hashlib.sha256(self._prefix)
        digest.update(b"\0p" + (prompt.encode("utf-8", "surrogatepass") if prompt is not None else b"\0none"))
        if self.item_worker:
            digest.update(b"\0i" + _canonical(unit.payload))
        if self.files:
            path = unit.payload.get("path")
            content = file_digest(path) if isinstance(path, str) else None
            if content is None:
                return None, prompt
            digest.update(b"\0f" + content.encode())
        return digest.hexdigest(), prompt
