"""Terminal presentation: status panels, conversations, test reports.

Agent output is untrusted text: it is always wrapped in `rich.text.Text` (never parsed as markup),
so a model writing `[bold]` or `[/]` cannot restyle or break the terminal output.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

# Piped output (grep, files) must not be wrapped or cut at 80 columns.
out = Console(highlight=False, soft_wrap=not sys.stdout.isatty(), width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATUS_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "FAILED": "red", "CANCELLED": "magenta",
                "PAUSED": "yellow", "TESTING": "blue", "CREATED": "white", "PENDING": "white"}


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def age(ts: float | None) -> str:
    return "-" if ts is None else duration(time.time() - ts) + " ago"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def status_panel(s: dict[str, Any], active: list[dict[str, Any]] | None = None) -> Panel:
    """The status of one job: a bar, counts, rate, ETA, cost, executor; optionally active units."""
    head = Table.grid(padding=(0, 2))
    head.add_row(status_text(s["status"]), ProgressBar(total=max(s["total"], 1), completed=s["done"], width=30),
                 f"{s['done']}/{s['total']} done ({s['progress']:.1f}%)")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("units", f"{s['completed']} completed · {s['failed']} failed · {s['running']} running · "
                          f"{s['pending']} pending · {s['cancelled']} cancelled")
    grid.add_row("rate", f"{s['rate']:.2f} units/s   ETA {duration(s['eta_seconds'])}   "
                         f"elapsed {duration(s['elapsed_seconds'])}")
    cost = f"{money(s['cost_usd'])} spent"
    if s.get("projected_cost_usd") is not None and s["status"] in ("RUNNING", "PAUSED", "TESTING"):
        cost += f" · {money(s['projected_cost_usd'])} projected"
    if s.get("budget_usd"):
        cost += f" · budget {money(s['budget_usd'])}"
    grid.add_row("cost", f"{cost} · {s['tokens_in']:,} tokens in / {s['tokens_out']:,} out")
    ex = s["executor"]
    exec_line = ex["state"]
    if ex["pid"]:
        exec_line += f" (pid {ex['pid']} on {ex['host']}, heartbeat {age(ex['heartbeat_at'])})"
    grid.add_row("executor", exec_line)
    if len(ex.get("executors") or []) > 1:
        for e in ex["executors"]:
            grid.add_row("", f"{e['host']} pid {e['pid']} · {e['state']} · heartbeat {age(e['heartbeat_at'])} · "
                             f"{e['units_done'] or 0} unit(s) done")
    grid.add_row("worker", f"{s['worker']} · concurrency {s['concurrency']} · retries {s['max_retries']} · "
                           f"timeout {duration(s['timeout_s'])} · priority {s['priority']}")
    if s.get("pause_reason"):
        grid.add_row("paused", Text(str(s["pause_reason"]), style="yellow"))
    if s.get("hold_until"):
        until = time.strftime("%H:%M:%S", time.localtime(s["hold_until"]))
        grid.add_row("holding", f"quota: no new units until {until}")
    if s.get("error"):
        grid.add_row("error", Text(str(s["error"]), style="red"))
    if s.get("reduce"):
        r = s["reduce"]
        grid.add_row("reduce", Text(f"{r['status'] or 'not run'}" + (f": {r['error']}" if r.get("error") else "")))
    parts: list[Any] = [head, grid]
    if active:
        table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
        for col in ("unit", "key", "try", "time", "doing"):
            table.add_column(col)
        for a in active[:10]:
            table.add_row(str(a["unit_id"]), Text(_short(a["key"], 40)), str(a["attempt"]), duration(a["elapsed_s"]),
                          Text(_short(event_line(a["last_event"]) if a["last_event"] else "", 60)))
        parts.append(table)
    return Panel(Group(*parts), title=Text(f"job {s['id']} · {s['name']}"), title_align="left", expand=False)


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def event_line(event: dict[str, Any]) -> str:
    """One line describing an event (for tables and live views)."""
    kind, data = event["kind"], event.get("data") or {}
    if kind == "tool_use":
        args = json.dumps(data.get("input", {}), ensure_ascii=False)
        return f"→ {data.get('name')}({_short(args, 80)})"
    if kind == "tool_result":
        return ("✗ " if data.get("is_error") else "← ") + _short(str(data.get("content", "")), 100)
    if kind == "command":
        return "$ " + shlex.join(str(a) for a in data.get("argv", []))
    if kind in ("assistant", "thinking", "stdout", "stderr"):
        return f"{kind}: " + _short(str(data.get("text", "")), 100)
    if kind == "error":
        return f"error: {data.get('error')}"
    if kind == "result":
        return f"result: ${data.get('cost', data.get('cost_usd', 0)) or 0:.4f}, {data.get('turns', '?')} turn(s)"
    return kind


def conversation(events: list[dict[str, Any]]) -> list[Any]:
    """Render a unit's events as a readable transcript."""
    lines: list[Any] = []
    for e in events:
        kind, data = e["kind"], e.get("data") or {}
        if kind == "start":
            lines.append(Text(f"── attempt {data.get('attempt')} ({data.get('worker')}) ──", style="bold dim"))
        elif kind in ("assistant",):
            lines.append(Text(str(data.get("text", ""))))
        elif kind == "thinking":
            lines.append(Text(str(data.get("text", "")), style="dim italic"))
        elif kind in ("tool_use", "command"):
            lines.append(Text(event_line(e), style="cyan"))
        elif kind == "tool_result":
            style = "red" if data.get("is_error") else "dim"
            lines.append(Text(("✗ " if data.get("is_error") else "← ") + _short(str(data.get("content", "")), 500),
                              style=style))
        elif kind == "stdout":
            lines.append(Text(str(data.get("text", ""))))
        elif kind == "stderr":
            lines.append(Text(str(data.get("text", "")), style="yellow"))
        elif kind == "error":
            lines.append(Text(f"error ({data.get('error_class')}): {data.get('error')}", style="red"))
        elif kind == "end":
            lines.append(Text(f"done in {duration(data.get('duration_s'))}", style="green dim"))
        elif kind in ("exit", "result", "system", "usage", "warning", "timeout"):
            lines.append(Text(f"{kind}: {_short(json.dumps(data, ensure_ascii=False, default=str), 200)}", style="dim"))
        else:
            lines.append(Text(f"{kind}: {_short(json.dumps(data, ensure_ascii=False, default=str), 200)}", style="dim"))
    return lines


#: Characters of one text (prompt, output, error) `abp show` draws; a terminal panel of megabytes takes
#: minutes to wrap and nobody reads it there (`--json` and `abp results` give the whole text).
SHOWN_CHARS = 40_000


def _shown(text: str) -> Text:
    if len(text) <= SHOWN_CHARS:
        return Text(text)
    half = SHOWN_CHARS // 2
    note = f"\n… [{len(text) - SHOWN_CHARS:,} characters not shown here; `abp show --json` has them all] …\n"
    return Text.assemble(text[:half], (note, "yellow"), text[-half:])


def unit_report(u: dict[str, Any], title: str, console: Console | None = None) -> None:
    """Payload, prompt, attempts, conversation and output of one unit."""
    out = console or globals()["out"]
    out.print(Text(f"{title}: unit {u['id']} ({u['key']})", style="bold"))
    out.print(Text.assemble("status ", status_text(u["status"]),
                            f" · attempts {u['attempts']} · {duration(u['duration_s'])} · {money(u['cost_usd'])}"
                            f" · {u['tokens_in']:,}/{u['tokens_out']:,} tokens · {u['turns']} turn(s)"))
    out.print(Panel(Text(json.dumps(u["payload"], indent=2, ensure_ascii=False, default=str)), title="payload",
                    title_align="left"))
    if u.get("prompt"):
        out.print(Panel(_shown(u["prompt"]), title="prompt", title_align="left"))
    if u.get("events"):
        out.print(Panel(Group(*conversation(u["events"])), title="conversation", title_align="left"))
    if u.get("output") is not None:
        out.print(Panel(_shown(u["output"]), title="output", title_align="left", border_style="green"))
    if u.get("data") is not None:
        out.print(Panel(Text(json.dumps(u["data"], indent=2, ensure_ascii=False, default=str)), title="data",
                        title_align="left"))
    if u.get("error"):
        out.print(Panel(_shown(u["error"]), title=f"error ({u.get('error_class')})", title_align="left",
                        border_style="red"))


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_lines=False)
    for col, justify in (("id", "right"), ("name", "left"), ("status", "left"), ("progress", "right"),
                         ("done/total", "right"), ("failed", "right"), ("cost", "right"), ("worker", "left"),
                         ("created", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(str(r["id"]), Text(r["name"]), status_text(r["status"]), f"{r['progress']:.1f}%",
                      f"{r['done']}/{r['total']}", str(r["failed"]), money(r["cost_usd"]), r["worker"],
                      age(r["created_at"]))
    return table
