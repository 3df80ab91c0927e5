"""The flags of `abp create` and `abp run`, declared once and turned into a JobSpec.

Job flags are listed here; worker flags are generated from each worker kind's options model (a
Pydantic model), so a new worker's options appear in `--help` and reach the worker without any CLI
code. The same models validate REST and MCP input.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from pydantic.fields import FieldInfo

from agentic_batch.errors import InvalidSpec, name_fields
from agentic_batch.flags import PROMPT_PANEL, RUN_PANEL, SOURCE_PANEL, Flag, flag_of
from agentic_batch.spec import JobSpec
from agentic_batch.workers import get_worker_kind, worker_kinds

WORKER_PANEL = "Worker options"
#: A bare `--json` (output as JSON) is rewritten to this before parsing; `--json PATH` is a source.
JSON_OUTPUT_FLAG = "--json-output"


def _opt(annotation: Any, default: Any, *decls: str, help: str, panel: str, **kw: Any) -> inspect.Parameter:
    name = decls[0].split("/")[0].lstrip("-").replace("-", "_")
    info = typer.Option(*decls, help=help, rich_help_panel=panel, **kw)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, info])


def _param_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def field_param(field_name: str, field: FieldInfo, flag: Flag) -> inspect.Parameter:
    """The flag of a spec field: its type (a file's path for `Flag(file=True)`), its default (shown in
    --help), the flag's help or else the field's description."""
    annotation = str | None if flag.file else field.annotation
    if field.is_required():
        default: Any = ...
    else:
        default = None if flag.file else field.get_default(call_default_factory=True)
    extra = {"metavar": flag.metavar} if flag.metavar else {}
    return _opt(annotation, default, flag.flag(field_name), help=flag.help or field.description or "",
                panel=flag.panel, **extra)


OptStr = str | None
#: Source flags (until sources declare their own).
SOURCE_PARAMS: list[inspect.Parameter] = [
    _opt(OptStr, None, "--files", help="Glob of files, relative to --root: `'**/*.py'`, `'docs/*.md'`.",
         panel=SOURCE_PANEL),
    _opt(OptStr, None, "--root", help="Directory the --files glob starts from (default: current directory).",
         panel=SOURCE_PANEL),
    _opt(OptStr, None, "--csv", help="CSV file; the header row names the fields.", panel=SOURCE_PANEL),
    _opt(str, ",", "--delimiter", help="CSV field delimiter.", panel=SOURCE_PANEL),
    _opt(OptStr, None, "--json", help="JSON file holding an array of objects (a bare --json instead prints "
         "the result as JSON).", panel=SOURCE_PANEL),
    _opt(OptStr, None, "--json-path", help="Dotted path to the array inside the JSON file: 'data.items'.",
         panel=SOURCE_PANEL),
    _opt(OptStr, None, "--jsonl", help="JSON Lines file, one object per line.", panel=SOURCE_PANEL),
    _opt(OptStr, None, "--sql", help="SQL query whose rows are the items (read-only connection).",
         panel=SOURCE_PANEL),
    _opt(OptStr, None, "--sql-db", help="Database URL for --sql: sqlite:///file.db, postgresql+psycopg://...",
         panel=SOURCE_PANEL),
    _opt(OptStr, None, "--python", help="module:function (or file.py:function) returning or yielding dicts.",
         panel=SOURCE_PANEL),
    _opt(list[str] | None, None, "--source-arg", help="k=v keyword argument for --python (repeatable).",
         panel=SOURCE_PANEL, metavar="<k=v>"),
    _opt(OptStr, None, "--key", help="Item field that identifies an item (default: path for files, else a "
         "hash of the item).", panel=SOURCE_PANEL),
    _opt(OptStr, None, "--priority-field", help="Item field holding a unit priority (low..critical or a number).",
         panel=SOURCE_PANEL),
]

#: Flags of the CLI's own, each listed after the job spec field it belongs with.
_HAND_MADE: dict[str, list[inspect.Parameter]] = {
    "source": SOURCE_PARAMS,
    "prompt": [_opt(OptStr, None, "--prompt-file", help="File holding the prompt template.", panel=PROMPT_PANEL)],
    "worker": [_opt(OptStr, None, "--worker", help="Worker kind: " + ", ".join(worker_kinds()) + " (default: "
                    "command when --command is given, python when --function is).", panel=RUN_PANEL)],
}


def _job_params() -> tuple[list[inspect.Parameter], dict[str, str]]:
    """The job's flags, in JobSpec's field order: one per field with a `Flag`, the hand-made ones beside
    their field; and which JobSpec field each generated flag's parameter fills."""
    params: list[inspect.Parameter] = []
    fields: dict[str, str] = {}
    for name, field in JobSpec.model_fields.items():
        flag = flag_of(field)
        if flag is not None:
            param = field_param(name, field, flag)
            params.append(param)
            fields[param.name] = name
        params.extend(_HAND_MADE.get(name, []))
    params.append(_opt(bool, False, JSON_OUTPUT_FLAG, help="Print the result as JSON.", panel=RUN_PANEL,
                       hidden=True))
    return params, fields


#: The job's flags, and the JobSpec field behind each generated one (`timeout` -> `timeout_s`).
JOB_PARAMS, JOB_FLAG_FIELDS = _job_params()


#: Help for worker flags, shared by every worker kind that has the flag (the models' descriptions
#: are written for one kind; these say what the flag means for all of them).
WORKER_FLAG_HELP = {
    "model": "Model name, e.g. claude-sonnet-4-5 or gpt-4o-mini.",
    "base_url": "API base URL (any OpenAI-compatible server for openai: Ollama, vLLM, LM Studio, OpenRouter).",
    "api_key_env": "Name of the environment variable that holds the API key.",
    "max_turns": "Most model turns per unit (a tool loop step is a turn).",
    "allow_commands": "Give the model a run_command tool (argv, no shell) in the unit's directories.",
    "mcp_config": "JSON file with {\"mcpServers\": {...}}: MCP servers whose tools the agent may use.",
    "price_in": "USD per million input tokens (overrides the built-in price table).",
    "price_out": "USD per million output tokens (overrides the built-in price table).",
    "temperature": "Sampling temperature.",
    "system_prompt": "System prompt for the model (replaces the default).",
    "max_tokens": "Cap on tokens per model reply.",
    "allowed_tools": "Claude Code tools allowed without asking, comma list: Read,Write,Edit,Bash.",
    "disallowed_tools": "Claude Code tools never allowed, comma list.",
    "permission_mode": "default, acceptEdits (default), plan or bypassPermissions (only when you mean it).",
    "add_dir": "Extra directory the agent may access (repeatable); a file's own directory is added for you.",
    "cwd": "Directory the agent or command runs in (default: the file's directory for --files, else the "
           "job's workspace; for command: where the job was created).",
    "system_prompt_append": "Text appended to Claude Code's system prompt.",
    "max_budget_usd": "Spending cap per unit, enforced by Claude Code.",
    "cli_path": "Path of the claude CLI (default: the one bundled with claude-agent-sdk).",
}


def _cli_type(annotation: Any) -> tuple[Any, bool, str]:
    """The CLI-side type for an options-model field: (type, is_flag, label for --help).

    Values are parsed as text and go to Pydantic as given (so the CLI, REST and MCP share one
    validation and its messages); the label still says what the model expects: `<int>`, `<float>`,
    `<a|b|c>` for a choice, nothing for an on/off flag.
    """
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _cli_type(args[0])
    if annotation is bool:
        return bool | None, True, ""
    if origin is list:
        return list[str] | None, False, _cli_type(args[0])[2] if args else "<str>"
    if origin is typing.Literal:
        choices = "|".join(str(a) for a in args)
        return str | None, False, f"<{choices}>" if len(choices) <= 20 else "<choice>"
    names = {int: "int", float: "float"}
    return str | None, False, f"<{names.get(annotation, 'str')}>"


def worker_params() -> tuple[list[inspect.Parameter], dict[str, list[str]]]:
    """One CLI option per distinct field across worker kinds; and which kinds accept each."""
    params: dict[str, inspect.Parameter] = {}
    owners: dict[str, list[str]] = {}
    taken = {p.name for p in JOB_PARAMS}
    for kind_name in worker_kinds():
        try:
            kind = get_worker_kind(kind_name)
        except Exception:  # a worker whose module cannot import shows no flags; `create` explains
            continue
        for field_name, field in kind.options_model.model_fields.items():
            owners.setdefault(field_name, []).append(kind_name)
            if field_name in params or field_name in taken:
                continue
            cli_type, is_flag, label = _cli_type(field.annotation)
            flag = "--" + field_name.replace("_", "-")
            decls = (f"{flag}/--no-{flag[2:]}",) if is_flag else (flag,)
            help_text = WORKER_FLAG_HELP.get(field_name) or _literal(field.description or "")
            params[field_name] = _opt(cli_type, None, *decls, help=help_text, panel=WORKER_PANEL, metavar=label)
    for name, param in params.items():
        info = typing.get_args(param.annotation)[1]
        info.help = f"{info.help} [{', '.join(owners[name])}]".strip()
    return list(params.values()), owners


def _literal(text: str) -> str:
    """A model's description as literal text: --help renders Markdown, where `*` and `_` would
    turn into emphasis and vanish (a glob like `**/*.py` lost its stars)."""
    return "".join("\\" + ch if ch in "\\`*_[]<>#" else ch for ch in text)


def build_signature(extra: list[inspect.Parameter]) -> tuple[inspect.Signature, dict[str, list[str]]]:
    wparams, owners = worker_params()
    return inspect.Signature([*JOB_PARAMS, *wparams, *extra]), owners


def rewrite_json_flag(argv: list[str]) -> list[str]:
    """`--json` followed by nothing or another option means JSON output; `--json PATH` is a source."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--json" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = JSON_OUTPUT_FLAG
    return out


def spec_from_options(values: dict[str, Any], owners: dict[str, list[str]]) -> JobSpec:
    """Turn parsed flags into a JobSpec; one clear error for a missing or contradictory flag."""
    sources = {k: values.get(k) for k in ("files", "csv", "json", "jsonl", "sql", "python") if values.get(k)}
    if not sources:
        raise InvalidSpec("no source given", hint="use one of --files, --csv, --json, --jsonl, --sql, --python")
    if len(sources) > 1:
        raise InvalidSpec(f"give one source, not {len(sources)}: " + ", ".join("--" + k for k in sources))
    kind = next(iter(sources))
    source: dict[str, Any] = {"kind": kind, "key": values.get("key"), "priority_field": values.get("priority_field")}
    if kind == "files":
        source.update(glob=values["files"], root=values.get("root"))
    elif kind in ("csv", "json", "jsonl"):
        source.update(path=values[kind], delimiter=values.get("delimiter") or ",", json_path=values.get("json_path"))
    elif kind == "sql":
        source.update(query=values["sql"], db_url=values.get("sql_db"))
    else:
        source.update(function=values["python"], args=_kv_pairs(values.get("source_arg") or []))
    if kind != "files" and values.get("root"):
        raise InvalidSpec("--root applies to --files only")

    prompts = [k for k in ("prompt", "prompt_file", "intent") if values.get(k) is not None]
    if len(prompts) > 1:
        given = " and ".join("--" + p.replace("_", "-") for p in prompts)
        raise InvalidSpec(f"give one of --prompt, --prompt-file, --intent, not {given}")
    prompt = values.get("prompt")
    if values.get("prompt_file") is not None:
        prompt = read_text_file(values["prompt_file"], "--prompt-file")

    worker_values = {k: v for k, v in values.items() if k in owners and v not in (None, [], ())}
    worker = values.get("worker")
    if worker is None:
        worker = "command" if "command" in worker_values else "python" if "function" in worker_values else None
    if worker is None:
        raise InvalidSpec("no worker given", hint="use --worker " + "|".join(worker_kinds())
                          + " (or --command / --function)")
    get_worker_kind(worker)  # unknown kind -> clear error
    stray = [k for k in worker_values if worker not in owners[k]]
    if stray:
        flag = "--" + stray[0].replace("_", "-")
        raise InvalidSpec(f"{flag} does not apply to the {worker} worker",
                          hint=f"it belongs to: {', '.join(owners[stray[0]])}")
    payload: dict[str, Any] = {name: values[param] for param, name in JOB_FLAG_FIELDS.items() if param in values}
    payload.update(source=source, prompt=prompt, worker=worker, worker_options=worker_values, workdir=str(Path.cwd()))
    for param, name in JOB_FLAG_FIELDS.items():
        job_flag = flag_of(JobSpec.model_fields[name])
        if job_flag is not None and job_flag.file and values.get(param):
            payload[name] = _read_field_file(values[param], JobSpec.model_fields[name], job_flag.flag(name))
    from pydantic import ValidationError

    from agentic_batch.spec import describe_validation_error

    try:
        return JobSpec.model_validate(payload)
    except ValidationError as exc:
        message = name_fields(describe_validation_error(exc), lambda path: flag_for(path, kind))
        raise InvalidSpec(message) from None


#: Source fields whose flag is not `--` + the field name with dashes.
_FLAG_OF_FIELD = {"source.glob": "--files",
                  "source.query": "--sql", "source.db_url": "--sql-db", "source.function": "--python",
                  "source.args": "--source-arg", "source.kind": "the source flag",
                  "workdir": "the current directory"}


def flag_for(path: str, source_kind: str | None = None) -> str:
    """The CLI's name for a job spec field (errors name fields by path; see `errors.field`)."""
    if path == "source.path":
        return f"--{source_kind}" if source_kind else "--csv/--json/--jsonl"
    if path in _FLAG_OF_FIELD:
        return _FLAG_OF_FIELD[path]
    field = JobSpec.model_fields.get(path)
    flag = flag_of(field) if field is not None else None
    if flag is not None:
        return flag.flag(path)
    return "--" + path.split(".")[-1].replace("_", "-")


def _read_field_file(path: str, field: FieldInfo, flag: str) -> Any:
    """The value a `Flag(file=True)` names: the file's text, or its JSON when the field is not text."""
    import json

    text = read_text_file(path, flag)
    if field.annotation in (str, str | None):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSpec(f"{flag} {path} is not JSON: line {exc.lineno}: {exc.msg}") from None


def _kv_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"--source-arg {pair!r} is not k=v")
        out[key] = value
    return out


def read_text_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{flag}: no such file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{flag}: cannot read {path}: {exc}") from None
