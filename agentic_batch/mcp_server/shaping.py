"""What the tools hand back to a model: small, truncated, with the next step spelled out.

A model's context is the scarce resource here. Large outputs are cut (and say so, with how to get
the rest), a unit's conversation is summarised as one short line per event, and every status says
in words what to do next.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from agentic_batch.results import RESULT_COLUMNS
from agentic_batch.service.models import EventView, JobView, StartedJob, UnitDetail
from agentic_batch.states import JobStatus

#: Events listed in a conversation summary: the first few and the last many.
HEAD_EVENTS, TAIL_EVENTS = 5, 40
EVENT_TEXT_CHARS = 160


def clip(text: str | None, limit: int) -> tuple[str | None, int | None]:
    """(text cut to `limit` characters with a marker, original length if it was cut)."""
    if text is None or len(text) <= limit:
        return text, None
    return text[:limit] + f"… [truncated: {len(text)} characters in all]", len(text)


def clip_values(row: dict[str, Any], limit: int) -> dict[str, Any]:
    """Cut every long string value of a row; `truncated` maps cut fields to their full length."""
    out: dict[str, Any] = {}
    cut: dict[str, int] = {}
    for name, value in row.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value, ensure_ascii=False, default=str)
            if len(text) > limit:
                out[name], cut[name] = clip(text, limit)[0], len(text)
                continue
        if isinstance(value, str):
            out[name], full = clip(value, limit)
            if full is not None:
                cut[name] = full
            continue
        out[name] = value
    if cut:
        out["truncated"] = cut
    return out


def status_summary(s: JobView) -> str:
    """One line a model can repeat to the user."""
    line = f"job {s.id} “{s.name}” is {s.status}: {s.done}/{s.total} done ({s.progress:.0f}%)"
    extra = [f"{s.completed} completed"]
    if s.failed:
        extra.append(f"{s.failed} failed")
    if s.cancelled:
        extra.append(f"{s.cancelled} cancelled")
    if s.running:
        extra.append(f"{s.running} running")
    line += " — " + ", ".join(extra)
    if s.rate:
        line += f"; {s.rate:.2f} units/s"
    if s.eta_seconds is not None:
        line += f", about {s.eta_seconds:.0f}s left"
    if s.cost_usd:
        line += f"; cost ${s.cost_usd:.4f}"
    if s.pause_reason:
        line += f"; paused: {s.pause_reason}"
    if s.error:
        line += f"; error: {s.error}"
    return line


def next_step(s: JobView) -> str:
    """What the caller should do next, by job status."""
    job = s.id
    return {
        JobStatus.CREATED: f"Call start_job(job_id={job}) to run the test unit and show its output to the user.",
        JobStatus.TESTING: f"The test output is waiting for the user's decision: start_job(job_id={job}, approve=true) "
                   f"starts the rest; start_job(job_id={job}, reject=true) then edit_prompt changes the prompt.",
        JobStatus.RUNNING: f"The job runs in a detached executor (it keeps going if this conversation ends). Check "
                   f"again later with get_job_status(job_id={job}, wait_seconds=30).",
        JobStatus.PAUSED: f"Resume with resume_job(job_id={job}).",
        JobStatus.COMPLETED: f"Fetch results with get_results(job_id={job}) or write them to a file with "
                     f"export_results(job_id={job}, path=...).",
        JobStatus.FAILED: f"Some units failed (the error says why): see get_results(job_id={job}, status='failed'); "
                  f"retry_failed(job_id={job}) runs them again.",
        JobStatus.CANCELLED: f"The job or some of its units were cancelled; completed results remain available via "
                     f"get_results(job_id={job}); retry_failed(job_id={job}, include_cancelled=true) runs the "
                     f"cancelled units.",
    }.get(s.status, "")


#: Status fields a model uses; the rest (timestamps, limits, tokens, options) stays in the service's
#: dict for the CLI and REST. `get_job_status` is polled: every field here is paid for on each poll.
STATUS_FIELDS = ("id", "name", "status", "total", "pending", "running", "completed", "failed", "cancelled",
                 "cached", "progress", "eta_seconds", "cost_usd", "projected_cost_usd", "budget_usd", "error",
                 "pause_reason", "hold_until", "reduce", "batches")
_QUIET_ZERO_STATUS = ("cost_usd", "projected_cost_usd", "cached")


def status_view(s: JobView) -> dict[str, Any]:
    """The service's status, cut to what a model needs, plus a one-line summary and the next step."""
    fields = s.model_dump(mode="json", include=set(STATUS_FIELDS))
    view = {name: fields[name] for name in STATUS_FIELDS
            if fields[name] not in (None, {}, []) and not (name in _QUIET_ZERO_STATUS and not fields[name])}
    if isinstance(s, StartedJob) and s.cache:  # what the result cache did before the run started
        view["plan"] = s.plan.model_dump(mode="json")
    executor = s.executor
    view["executor"] = {k: v for k, v in (("state", executor.state), ("pid", executor.pid)) if v is not None}
    step = next_step(s)
    if s.status == JobStatus.RUNNING and executor.state != "running" and (s.pending or s.running):
        step = (f"No executor is working on this RUNNING job (it died or was stopped); call "
                f"resume_job(job_id={s.id}) to reclaim its units and start one.")
    return {"summary": status_summary(s), **view, "next_step": step}


#: Result-row columns that are not the item's own fields (both the unit's number and its old id).
SYSTEM_COLUMNS = frozenset({"unit", "key", *RESULT_COLUMNS})
_QUIET_ZERO = ("cost_usd", "tokens_in", "tokens_out", "errors", "turns")


def hoist_status(page: dict[str, Any]) -> dict[str, Any]:
    """Rows that all share one status say it once, at the page level."""
    statuses = {row.get("status") for row in page["rows"]}
    if len(statuses) == 1 and page["rows"]:
        page["status_of_every_row"] = statuses.pop()
        page["rows"] = [{k: v for k, v in row.items() if k != "status"} for row in page["rows"]]
    return page


def result_row(row: dict[str, Any], max_chars: int, item_fields: bool) -> dict[str, Any]:
    """A result row for a model: no empty values, no duration; the item's fields only when asked
    (the assistant named the source; the key says which item a row is); long values cut."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if not item_fields and name not in SYSTEM_COLUMNS and not name.startswith("data"):
            continue
        if value is None or name == "duration_s" or (name in _QUIET_ZERO and not value) or \
                (name == "attempts" and value == 1):
            continue
        out[name] = value
    return clip_values(out, max_chars)


def event_text(event: EventView) -> str:
    """A short description of one event (tool call, tool result, text, command, error...)."""
    kind, data = event.kind, event.data or {}
    if kind == "tool_use":
        text = f"{data.get('name')}({json.dumps(data.get('input', {}), ensure_ascii=False, default=str)})"
    elif kind == "tool_result":
        text = ("error: " if data.get("is_error") else "") + str(data.get("content", ""))
    elif kind == "command":
        text = " ".join(str(a) for a in data.get("argv", []))
    elif kind in ("assistant", "thinking", "stdout", "stderr"):
        text = str(data.get("text", ""))
    elif kind == "error":
        text = f"{data.get('error_class')}: {data.get('error')}"
    elif kind == "result":
        text = f"cost ${data.get('cost', data.get('cost_usd', 0)) or 0:.4f}, {data.get('turns', '?')} turn(s)"
    elif kind == "start":
        text = f"attempt {data.get('attempt')} ({data.get('worker')})"
    else:
        text = json.dumps(data, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= EVENT_TEXT_CHARS else text[: EVENT_TEXT_CHARS - 1] + "…"


def conversation_summary(events: Sequence[EventView]) -> dict[str, Any]:
    """Event counts by kind and one short line per event (first few and last many), not the transcript."""
    lines = [{"attempt": e.attempt, "kind": e.kind, "text": event_text(e)} for e in events]
    omitted = 0
    if len(lines) > HEAD_EVENTS + TAIL_EVENTS:
        omitted = len(lines) - HEAD_EVENTS - TAIL_EVENTS
        lines = lines[:HEAD_EVENTS] + [{"kind": "…", "text": f"{omitted} event(s) omitted"}] + lines[-TAIL_EVENTS:]
    summary: dict[str, Any] = {"events": len(events), "by_kind": dict(Counter(e.kind for e in events))}
    if omitted:
        summary["omitted"] = omitted
    return {**summary, "lines": lines}


UNIT_FIELDS = ("number", "key", "status", "attempts", "errors", "error", "error_class", "exit_code", "cost_usd",
               "tokens_in", "tokens_out", "turns", "duration_s", "session_id", "cached_from")


def unit_view(u: UnitDetail, max_chars: int) -> dict[str, Any]:
    """One unit: payload, prompt, output (each cut to max_chars), error, cost and a conversation summary."""
    fields = u.model_dump(mode="json", include=set(UNIT_FIELDS))
    view: dict[str, Any] = {name: fields[name] for name in UNIT_FIELDS
                            if fields[name] is not None and not (name in _QUIET_ZERO and not fields[name])}
    cut: dict[str, int] = {}
    payload = u.payload or {}
    payload_text = json.dumps(payload, ensure_ascii=False, default=str)
    if len(payload_text) > max_chars:
        view["payload"] = clip_values(payload, max(200, max_chars // max(len(payload), 1)))
        cut["payload"] = len(payload_text)
    else:
        view["payload"] = payload
    # stdout is left out: it is `output` (a command unit's), and the context is the model's
    for name, text in (("prompt", u.prompt), ("output", u.output), ("stderr", u.stderr)):
        if text is None and name in ("prompt", "stderr"):
            continue  # a command or python worker without a template, a worker with no stderr: nothing to show
        view[name], full = clip(text, max_chars)
        if full is not None:
            cut[name] = full
    data = u.data
    if data is not None:
        text = json.dumps(data, ensure_ascii=False, default=str)
        view["data"], full = (data, None) if len(text) <= max_chars else clip(text, max_chars)
        if full is not None:
            cut["data"] = full
    view["conversation"] = conversation_summary(u.events)
    if cut:
        view["truncated"] = cut
        view["note"] = ("Some fields were cut; call get_unit with a larger max_chars, or export_results, "
                        "for the full text.")
    return view
