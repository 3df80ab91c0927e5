"""Read models: job status (counts, progress, rate, ETA, cost, executor) and unit detail.

Everything is derived on read from unit statuses and timestamps; nothing here is stored.
"""

from __future__ import annotations

import time
from typing import Any

from agentic_batch.config import Settings
from agentic_batch.engine.recovery import executor_alive
from agentic_batch.spec import Priority
from agentic_batch.store import JobRecord, Store, UnitRecord

RATE_WINDOW_S = 60.0
_PRIORITY_NAMES = {p.rank: p.value for p in Priority}


def executor_view(store: Store, settings: Settings, job_id: int) -> dict[str, Any]:
    # A test run's owner counts while it runs (a TESTING job shows who tests it), not once it is over.
    records = [r for r in store.list_executors(job_id) if r.state not in ("tested", "test-lost")]
    if not records:
        return {"state": "not_started", "pid": None, "host": None, "heartbeat_at": None, "id": None,
                "executors": []}
    now = time.time()
    listed = []
    for rec in records[:20]:
        alive = executor_alive(rec, settings, now)
        listed.append({"id": rec.id, "host": rec.host, "pid": rec.pid, "state": "running" if alive else "stopped",
                       "started_at": rec.started_at, "heartbeat_at": rec.heartbeat_at,
                       "units_done": store.owner_counts(rec.id).get("COMPLETED", 0) if alive else None})
    live = [e for e in listed if e["state"] == "running"]
    head = live[0] if live else listed[0]
    return {"state": head["state"], "pid": head["pid"], "host": head["host"], "heartbeat_at": head["heartbeat_at"],
            "id": head["id"], "executors": live if live else listed[:1]}


def job_status(store: Store, settings: Settings, job: JobRecord) -> dict[str, Any]:
    now = time.time()
    counts = store.count_units(job.id)
    total = sum(counts.values())
    done = counts["COMPLETED"] + counts["FAILED"] + counts["CANCELLED"]
    remaining = counts["PENDING"] + counts["RUNNING"]
    end = job.finished_at or now
    elapsed = (end - job.started_at) if job.started_at else 0.0
    if job.status == "RUNNING" and job.started_at:
        window = min(RATE_WINDOW_S, max(elapsed, 1e-9))
        rate = store.finished_since(job.id, now - window) / window if window > 0 else 0.0
    else:
        rate = (counts["COMPLETED"] + counts["FAILED"]) / elapsed if elapsed > 0 else 0.0
    eta = remaining / rate if rate > 0 and remaining and job.status == "RUNNING" else None
    totals = store.unit_totals(job.id)
    finished = counts["COMPLETED"] + counts["FAILED"]
    per_unit = totals["cost_usd"] / finished if finished else None
    projected = round(per_unit * total, 6) if per_unit is not None else None
    return {
        "id": job.id, "job_id": job.id, "name": job.name, "status": job.status,
        "total": total, "pending": counts["PENDING"], "running": counts["RUNNING"],
        "completed": counts["COMPLETED"], "failed": counts["FAILED"], "cancelled": counts["CANCELLED"],
        "done": done, "progress": round(100.0 * done / total, 2) if total else 0.0,
        "rate": round(rate, 4), "eta_seconds": round(eta, 1) if eta is not None else None,
        "elapsed_seconds": round(elapsed, 3),
        "cost_usd": round(totals["cost_usd"], 6), "projected_cost_usd": projected,
        "budget_usd": job.budget_usd, "tokens_in": totals["tokens_in"], "tokens_out": totals["tokens_out"],
        "worker": job.worker, "concurrency": job.concurrency, "max_retries": job.max_retries,
        "timeout_s": job.timeout_s, "priority": _PRIORITY_NAMES.get(job.priority, job.priority),
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "error": job.error, "pause_reason": job.pause_reason if job.status == "PAUSED" else None,
        "hold_until": job.hold_until if job.hold_until and job.hold_until > now else None,
        "test_unit_id": job.test_unit_id,
        "reduce": ({"status": job.reduce_status, "output": job.reduce_output, "error": job.reduce_error}
                   if job.reduce_prompt else None),
        "executor": executor_view(store, settings, job.id),
    }


def job_summary(store: Store, job: JobRecord) -> dict[str, Any]:
    """The cheap per-row view for `list`: counts and cost, no executor probing."""
    counts = store.count_units(job.id)
    total = sum(counts.values())
    done = counts["COMPLETED"] + counts["FAILED"] + counts["CANCELLED"]
    return {"id": job.id, "job_id": job.id, "name": job.name, "status": job.status, "worker": job.worker,
            "total": total, "completed": counts["COMPLETED"], "failed": counts["FAILED"],
            "running": counts["RUNNING"], "pending": counts["PENDING"], "cancelled": counts["CANCELLED"],
            "progress": round(100.0 * done / total, 2) if total else 0.0,
            "cost_usd": round(store.unit_totals(job.id)["cost_usd"], 6), "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at}


def unit_view(unit: UnitRecord) -> dict[str, Any]:
    duration = (unit.finished_at - unit.started_at) if unit.finished_at and unit.started_at else None
    return {"id": unit.id, "unit_id": unit.id, "job_id": unit.job_id, "seq": unit.seq, "key": unit.key,
            "priority": unit.priority, "status": unit.status, "attempts": unit.attempt, "errors": unit.error_count,
            "payload": unit.payload, "prompt": unit.prompt, "output": unit.output, "data": unit.data,
            "error": unit.error, "error_class": unit.error_class, "cost_usd": round(unit.cost_usd, 6),
            "tokens_in": unit.tokens_in, "tokens_out": unit.tokens_out, "turns": unit.turns,
            "session_id": unit.session_id, "started_at": unit.started_at, "finished_at": unit.finished_at,
            "duration_s": round(duration, 3) if duration is not None else None,
            "not_before": unit.not_before, "lease_owner": unit.lease_owner}
