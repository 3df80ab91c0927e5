"""The flags of `abp create` and `abp run`, generated from the models that REST and MCP take, and
turned back into a JobSpec.

Nothing here lists an option: job flags come from JobSpec's fields (those with a `Flag`), source
flags from each source kind's options model, worker flags from each worker kind's options model. So
a new job option, source kind or worker kind appears in `--help` and reaches the service without any
CLI code, and the same models validate REST and MCP input. Hand-made: `--worker` (inferred from
`--command`/`--function`), `--prompt-file`, and the hidden `--json-output`.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from agentic_batch.errors import InvalidSpec, name_fields
from agentic_batch.flags import PROMPT_PANEL, RUN_PANEL, Flag, flag_of
from agentic_batch.sources.kind import SourceSpecBase
from agentic_batch.sources.registry import get_source_kind, source_kinds
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


def _source_params() -> tuple[list[inspect.Parameter], dict[str, tuple[str, list[str]]]]:
    """A flag per source field with a `Flag`, kind by kind, then the fields every source has; and per
    flag's parameter, its field and the kinds it applies to (none: every kind). A kind's own flag
    (`--csv PATH`) is its parameter of the kind's name."""
    params: dict[str, inspect.Parameter] = {}
    fields: dict[str, tuple[str, list[str]]] = {}
    models: list[tuple[str | None, type[BaseModel]]] = [(k, get_source_kind(k).options_model) for k in source_kinds()]
    models.append((None, SourceSpecBase))
    for kind, model in models:
        for name, field in model.model_fields.items():
            flag = flag_of(field)
            if flag is None:
                continue
            param_name = _param_name(flag.flag(name))
            if param_name not in params:
                is_map = typing.get_origin(field.annotation) is dict
                annotation = list[str] | None if is_map else str | None if field.is_required() else field.annotation
                default = None if is_map or field.is_required() else field.get_default(call_default_factory=True)
                extra = {"metavar": flag.metavar} if flag.metavar else {}
                params[param_name] = _opt(annotation, default, flag.flag(name), help=flag.help or field.description
                                          or "", panel=flag.panel, **extra)
                fields[param_name] = (name, [])
            if kind is not None:
                fields[param_name][1].append(kind)
    return list(params.values()), fields


#: Source flags, and the source field behind each one with the kinds it applies to.
SOURCE_PARAMS, SOURCE_FLAG_FIELDS = _source_params()

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
    "mcp_config": "JSON file with {\"mcpServers\": {...}}: MCP servers whose tools the agent may use (mcp: "
                  "the servers --tool names).",
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


def _source_from_options(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The source kind whose own flag is given (`--csv`), and the source fields its flags set."""
    kinds = source_kinds()
    given = [kind for kind in kinds if values.get(kind)]
    if not given:
        raise InvalidSpec("no source given", hint="use one of " + ", ".join("--" + k for k in kinds))
    if len(given) > 1:
        raise InvalidSpec(f"give one source, not {len(given)}: " + ", ".join("--" + k for k in given))
    kind = given[0]
    source: dict[str, Any] = {"kind": kind}
    for param, (name, owners) in SOURCE_FLAG_FIELDS.items():
        value = values.get(param)
        if value in (None, [], ()) or (param != kind and value == _default_of(param)):
            continue
        flag = _flag_name(param)
        if owners and kind not in owners:
            raise InvalidSpec(f"{flag} applies to {'/'.join('--' + k for k in owners)} only")
        source[name] = _kv_pairs(value, flag) if isinstance(value, list) else value
    return kind, source


def _default_of(param: str) -> Any:
    return next(p.default for p in SOURCE_PARAMS if p.name == param)


def _flag_name(param: str) -> str:
    parameter = next(p for p in SOURCE_PARAMS if p.name == param)
    return str(typing.get_args(parameter.annotation)[1].default)


def spec_from_options(values: dict[str, Any], owners: dict[str, list[str]]) -> JobSpec:
    """Turn parsed flags into a JobSpec; one clear error for a missing or contradictory flag."""
    kind, source = _source_from_options(values)

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


#: Job spec fields said otherwise on the command line.
_FLAG_OF_FIELD = {"source.kind": "the source flag", "workdir": "the current directory", "error_group": "--error",
                  "include_cancelled": "--cancelled"}


def flag_for(path: str, source_kind: str | None = None) -> str:
    """The CLI's name for a job spec field (errors name fields by path; see `errors.field`)."""
    if path.startswith("source.") and path not in _FLAG_OF_FIELD:
        return _source_flag(path.removeprefix("source."), source_kind)
    if path in _FLAG_OF_FIELD:
        return _FLAG_OF_FIELD[path]
    field = JobSpec.model_fields.get(path)
    flag = flag_of(field) if field is not None else None
    if flag is not None:
        return flag.flag(path)
    return "--" + path.split(".")[-1].replace("_", "-")


def _source_flag(name: str, source_kind: str | None) -> str:
    """The flag of a source field: the given kind's, else every kind's that has one (`--csv/--json/--jsonl`)."""
    common = SourceSpecBase.model_fields.get(name)
    models = [SourceSpecBase] if common else [get_source_kind(k).options_model for k in source_kinds()]
    if source_kind and not common:
        models = [get_source_kind(source_kind).options_model, *models]
    flags = []
    for model in models:
        field = model.model_fields.get(name)
        flag = flag_of(field) if field is not None else None
        if flag is not None and flag.flag(name) not in flags:
            flags.append(flag.flag(name))
            if source_kind and model is models[0]:
                break
    return "/".join(flags) or "--" + name.replace("_", "-")


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


def _kv_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"{flag} {pair!r} is not k=v")
        out[key] = value
    return out


def read_text_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{flag}: no such file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{flag}: cannot read {path}: {exc}") from None
