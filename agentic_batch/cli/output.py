"""Terminal presentation: status panels, conversations, test reports.

Job names, unit keys, payloads and agent output are untrusted text. Every view shows them through
`safe()` (or `clean()` for plain strings): never parsed as Rich markup (a name `[bold]` prints as
`[bold]`), and control characters shown as escapes (`\x1b[31m` prints as the 8 characters
`\x1b[31m`, not as red), so nothing a model or a data file writes can restyle, move or clear the
user's terminal. Off a terminal (a pipe, a file) nothing is cut: content is printed whole.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agentic_batch.cli.jsonout import print_json_data
from agentic_batch.states import JobStatus, UnitStatus

if TYPE_CHECKING:  # the read commands' direct path (`cli.quick`) renders plain views, without pydantic
    from agentic_batch.service.models import ActiveUnit, EventView, JobSummary, JobView, RunPlan, UnitView

#: Off a terminal, tables and panels may be as wide as their content: a pipe has no width, and a
#: width of 200 cut a 507-character output. (Panels that would fill this width are not used there.)
PIPE_WIDTH = 100_000
_STDOUT_TTY = sys.stdout.isatty()
out = Console(highlight=False, soft_wrap=not _STDOUT_TTY, width=None if _STDOUT_TTY else PIPE_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATUS_STYLE: dict[str, str] = {JobStatus.COMPLETED: "green", JobStatus.RUNNING: "cyan", JobStatus.FAILED: "red",
                                  JobStatus.CANCELLED: "magenta", JobStatus.PAUSED: "yellow", JobStatus.TESTING: "blue",
                                  JobStatus.CREATED: "white", UnitStatus.PENDING: "white"}
#: Worker kinds that run no model: they have no cost, tokens or turns to show.
NON_MODEL_WORKERS = frozenset({"command", "python", "mcp"})

# C0 controls, DEL, C1 controls (ESC, CSI, OSC, BEL, backspace, carriage return, ...) and the bidi
# overrides that reorder what a line appears to say. \n and \t are kept in multi-line content only.
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_BLOCK = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def clean(value: Any, multiline: bool = False) -> str:
    """`value` as printable text: control characters as escapes (`\x1b`, `\r`, `\u202e`).

    One line (names, keys, table cells) escapes newlines and tabs too; `multiline=True` (an output,
    a prompt, a payload) keeps them, as they are the content's own layout.
    """
    text = value if isinstance(value, str) else str(value)
    return (_UNSAFE_BLOCK if multiline else _UNSAFE_LINE).sub(_escape_char, text)


def safe(value: Any, style: str = "", multiline: bool = False) -> Text:
    """Untrusted text for a Rich renderable: escaped by `clean`, never parsed as markup."""
    return Text(clean(value, multiline), style=style)


def markup_safe(value: Any) -> str:
    """Untrusted text inside a markup string (`err.print(f"... {markup_safe(x)}")`)."""
    from rich.markup import escape

    return escape(clean(value))


def print_json(value: Any) -> None:
    """JSON on stdout, still valid JSON, with every control character escaped (`\\u009b`)."""
    from agentic_batch.service.models import plain

    print_json_data(plain(value))


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


def shows_usage(worker: str | None, cost: float | None, *counts: int | None) -> bool:
    """Cost, tokens and turns mean something for a model worker, or once anything was spent; a
    `command` or `python` unit showing `$0.0000 · 0/0 tokens · 0 turn(s)` is noise."""
    return worker not in NON_MODEL_WORKERS or bool(cost) or any(counts)


def age(ts: float | None) -> str:
    return "-" if ts is None else duration(time.time() - ts) + " ago"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def status_panel(s: JobView, active: list[ActiveUnit] | None = None) -> Panel:
    """The status of one job: a bar, counts, rate, ETA, cost, executor; optionally active units."""
    head = Table.grid(padding=(0, 2))
    head.add_row(status_text(s.status), ProgressBar(total=max(s.total, 1), completed=s.done, width=30),
                 f"{s.done}/{s.total} done ({s.progress:.1f}%)")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("units", f"{s.completed} completed · {s.failed} failed · {s.running} running · "
                          f"{s.pending} pending · {s.cancelled} cancelled"
                          + (f" · {s.cached} cached" if s.cached else ""))
    grid.add_row("rate", f"{s.rate:.2f} units/s   ETA {duration(s.eta_seconds)}   "
                         f"elapsed {duration(s.elapsed_seconds)}")
    if shows_usage(s.worker, s.cost_usd, s.tokens_in, s.tokens_out) or s.budget_usd:
        cost = f"{money(s.cost_usd)} spent"
        if s.projected_cost_usd is not None and s.status in (JobStatus.RUNNING, JobStatus.PAUSED,
                                                                       JobStatus.TESTING):
            cost += f" · {money(s.projected_cost_usd)} projected"
        if s.budget_usd:
            cost += f" · budget {money(s.budget_usd)}"
        grid.add_row("cost", f"{cost} · {s.tokens_in:,} tokens in / {s.tokens_out:,} out")
    ex = s.executor
    exec_line: str = ex.state
    if ex.pid:
        exec_line += f" (pid {ex.pid} on {clean(ex.host)}, heartbeat {age(ex.heartbeat_at)})"
    grid.add_row("executor", exec_line)
    if len(ex.executors) > 1:
        for e in ex.executors:
            grid.add_row("", safe(f"{e.host} pid {e.pid} · {e.state} · heartbeat {age(e.heartbeat_at)}"
                                  f" · {e.units_done or 0} unit(s) done"))
    grid.add_row("worker", f"{s.worker} · concurrency {s.concurrency} · retries {s.max_retries} · "
                           f"timeout {duration(s.timeout_s)} · priority {s.priority}")
    if s.pause_reason:
        grid.add_row("paused", safe(s.pause_reason, style="yellow"))
    if s.hold_until:
        until = time.strftime("%H:%M:%S", time.localtime(s.hold_until))
        grid.add_row("holding", f"quota: no new units until {until}")
    if s.error:
        grid.add_row("error", safe(s.error, style="red"))
    if s.batches is not None:
        b = s.batches
        grid.add_row("batches", f"{b.in_flight} in flight ({b.units} unit(s), {money(b.projected_usd)} projected at "
                                f"the batch price) · {b.submitted} submitted")
        for batch in b.batches[:10]:
            counts = batch.counts
            grid.add_row("", safe(f"#{batch.id} {batch.provider_id or '(not created yet)'} · {batch.status} · "
                                  f"{counts.get('succeeded', 0)}/{counts.get('total', batch.units)} done"
                                  f"{f', {errs} errored' if (errs := counts.get('errored')) else ''} · "
                                  f"age {duration(batch.age_seconds)}"))
    if s.reduce:
        r = s.reduce
        grid.add_row("reduce", safe(f"{r.status or 'not run'}" + (f": {r.error}" if r.error else "")))
    parts: list[Any] = [head, grid]
    if active:
        table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
        for col in ("unit", "key", "try", "time", "doing"):
            table.add_column(col)
        for a in active[:10]:
            table.add_row(str(a.number), safe(_short(a.key, 40)), str(a.attempt), duration(a.elapsed_s),
                          safe(_short(event_line(a.last_event) if a.last_event else "", 60)))
        parts.append(table)
    return Panel(Group(*parts), title=safe(f"job {s.id} · {s.name}"), title_align="left", expand=False)


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def event_line(event: EventView) -> str:
    """One line describing an event (for tables and live views)."""
    kind, data = event.kind, event.data or {}
    if kind == "tool_use":
        args = json.dumps(data.get("input", {}), ensure_ascii=False)
        return f"→ {data.get('name')}({_short(args, 80)})"
    if kind == "tool_result":
        return ("✗ " if data.get("is_error") else "← ") + _short(str(data.get("content", "")), 100)
    if kind == "command":
        return "$ " + shlex.join(str(a) for a in data.get("argv", []))
    if kind in ("assistant", "thinking", "stdout", "stderr", "note"):
        return f"{kind}: " + _short(str(data.get("text", "")), 100)
    if kind == "error":
        return f"error: {data.get('error')}"
    if kind == "result":
        return f"result: ${data.get('cost', data.get('cost_usd', 0)) or 0:.4f}, {data.get('turns', '?')} turn(s)"
    return kind


def conversation(events: list[EventView]) -> list[Text]:
    """Render a unit's events as a readable transcript (every line escaped by `safe`)."""
    lines: list[Text] = []
    for e in events:
        kind, data = e.kind, e.data or {}
        if kind == "start":
            lines.append(safe(f"── attempt {data.get('attempt')} ({data.get('worker')}) ──", style="bold dim"))
        elif kind in ("assistant", "stdout"):
            lines.append(safe(data.get("text", ""), multiline=True))
        elif kind == "thinking":
            lines.append(safe(data.get("text", ""), style="dim italic", multiline=True))
        elif kind in ("tool_use", "command"):
            lines.append(safe(event_line(e), style="cyan"))
        elif kind == "tool_result":
            style = "red" if data.get("is_error") else "dim"
            lines.append(safe(("✗ " if data.get("is_error") else "← ") + _short(str(data.get("content", "")), 500),
                              style=style))
        elif kind == "stderr":
            lines.append(safe(data.get("text", ""), style="yellow", multiline=True))
        elif kind == "note":  # the engine changed the unit's text (cut to max_output_bytes, NUL replaced)
            lines.append(safe(f"note: {data.get('text', '')}", style="yellow"))
        elif kind == "error":
            lines.append(safe(f"error ({data.get('error_class')}): {data.get('error')}", style="red",
                              multiline=True))
        elif kind == "end":
            lines.append(Text(f"done in {duration(data.get('duration_s'))}", style="green dim"))
        else:
            lines.append(safe(f"{kind}: {_short(json.dumps(data, ensure_ascii=False, default=str), 200)}",
                              style="dim"))
    return lines


#: Characters of one text (prompt, output, error) `abp show` draws on a terminal; a terminal panel of
#: megabytes takes minutes to wrap and nobody reads it there (`--json` and `abp results` give the whole
#: text). Off a terminal nothing is cut: the text is printed whole, unwrapped, which is fast.
SHOWN_CHARS = 40_000


def _shown(text: str, whole: bool) -> Text:
    if whole or len(text) <= SHOWN_CHARS:
        return safe(text, multiline=True)
    half = SHOWN_CHARS // 2
    note = f"\n… [{len(text) - SHOWN_CHARS:,} characters not shown here; `abp show --json` has them all] …\n"
    return Text.assemble(safe(text[:half], multiline=True), (note, "yellow"), safe(text[-half:], multiline=True))


def _json_text(value: Any) -> Text:
    return safe(json.dumps(value, indent=2, ensure_ascii=False, default=str), multiline=True)


def unit_report(u: UnitView, title: str, console: Console | None = None, worker: str | None = None) -> None:
    """Payload, prompt, attempts, conversation and output of one unit.

    On a terminal each part is a panel; off a terminal (a pipe, a file, `less`) each part is a
    heading and its content printed whole, never wrapped into a box or cut at a width.
    """
    console = console or out
    whole = not console.is_terminal
    console.print(safe(f"{title}: unit {u.number} ({u.key})", style="bold"))
    line = Text.assemble("status ", status_text(u.status),
                         f" · attempts {u.attempts} · {duration(u.duration_s)}")
    if shows_usage(worker, u.cost_usd, u.tokens_in, u.tokens_out, u.turns):
        line.append(f" · {money(u.cost_usd)} · {u.tokens_in:,}/{u.tokens_out:,} tokens"
                    f" · {u.turns} turn(s)")
    if u.cached_from is not None:
        line.append(f" · cached from job {u.cached_from.job_id} unit {u.cached_from.unit}", style="cyan")
    if u.exit_code is not None:
        line.append(f" · exit code {u.exit_code}")
    console.print(line)
    sections: list[tuple[str, RenderableType, str]] = [("payload", _json_text(u.payload), "")]
    if u.prompt:
        sections.append(("prompt", _shown(u.prompt, whole), ""))
    events = getattr(u, "events", None)  # a UnitDetail: with its conversation
    if events:
        sections.append(("conversation", Group(*conversation(events)), ""))
    if u.output is not None:
        sections.append(("output", _shown(u.output, whole), "green"))
    if u.data is not None:
        sections.append(("data", _json_text(u.data), ""))
    if u.stderr:
        sections.append(("stderr", _shown(u.stderr, whole), "yellow"))
    if u.error:
        sections.append((clean(f"error ({u.error_class})"), _shown(u.error, whole), "red"))
    for name, body, border in sections:
        if console.is_terminal:
            console.print(Panel(body, title=name, title_align="left", border_style=border or "none"))
        else:
            console.print(Text(f"── {name} ──", style=border or "bold"), soft_wrap=True)
            console.print(body, soft_wrap=True)


def plan_line(plan: RunPlan) -> str:
    """What a start or retry found before running: "N units cached, M to run, projected $X"."""
    line = f"{plan.cached} unit{'' if plan.cached == 1 else 's'} cached, {plan.to_run} to run, projected " + (
        money(plan.projected_cost_usd) if plan.projected_cost_usd is not None else "cost unknown")
    if plan.unchanged:
        line += f" ({plan.unchanged} completed unit(s) unchanged, kept)"
    return line


def progress_line(s: JobView) -> Text:
    """One line of a job's progress, for logs and pipes (`abp watch` off a terminal)."""
    line = (f"job {s.id} {s.status}: {s.done}/{s.total} done ({s.progress:.1f}%) · "
            f"{s.completed} completed · {s.failed} failed · {s.running} running · "
            f"{s.pending} pending · {s.rate:.2f} units/s")
    if s.eta_seconds is not None:
        line += f" · ETA {duration(s.eta_seconds)}"
    if shows_usage(s.worker, s.cost_usd, s.tokens_in, s.tokens_out):
        line += f" · {money(s.cost_usd)}"
    return safe(line)


def jobs_table(rows: Sequence[JobSummary]) -> Table:
    table = Table(show_lines=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("id", "right"), ("name", "left"), ("status", "left"), ("progress", "right"), ("done/total", "right"),
        ("failed", "right"), ("cost", "right"), ("worker", "left"), ("created", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for r in rows:
        cost = money(r.cost_usd) if shows_usage(r.worker, r.cost_usd) else "-"
        table.add_row(str(r.id), safe(r.name), status_text(r.status), f"{r.progress:.1f}%",
                      f"{r.done}/{r.total}", str(r.failed), cost, safe(r.worker),
                      age(r.created_at))
    return table
