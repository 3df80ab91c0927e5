"""Compile, render and validate prompt templates (Jinja2, sandboxed, strict).

Templates come from users and are rendered once per unit, possibly thousands of times, by an executor
that runs later and elsewhere. So: the sandbox keeps a template from reaching Python internals, strict
undefined turns a misspelt field into an error at create time instead of an empty string sent to a
model, and every failure becomes a one-line `PromptError` that names the reference and the item.

Prompts are prose that often contains braces (`{"label": ...}`, `issue {#3}`), so comments use
`{## ... ##}` instead of Jinja's `{# ... #}`; only `{{` and `{%` are special.
"""

from __future__ import annotations

import functools
import json
import os
import re
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import jinja2
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import missing

from agentic_batch.errors import PromptError
from agentic_batch.prompts import limits
from agentic_batch.prompts.limits import RenderLimitError

RAW_HINT = "to write a literal {{ or {% in the prompt, wrap that text in {% raw %}...{% endraw %}"
_MAX_LISTED_FIELDS = 20


class MissingReference(UndefinedError):
    """An undefined value was used; remembers what was looked up on what, to name it to the user."""

    def __init__(self, message: str | None = None, *, obj: Any = missing, name: str | None = None) -> None:
        super().__init__(message)
        self.obj = obj
        self.name = name


class _RecordingUndefined(StrictUndefined):
    """StrictUndefined whose error carries the object and name, so the message can say `row.title`.

    Jinja binds `__str__`, `__iter__`, ... to the base failure method at class creation, so overriding
    that method would not take effect; swapping the exception factory does. Sandbox violations keep
    their own `SecurityError`.
    """

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[jinja2.TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if exc is UndefinedError:
            exc = functools.partial(MissingReference, obj=obj, name=name)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)


def _tojson(value: Any, indent: int | None = 2) -> str:
    """JSON for humans and models: no HTML escaping (Jinja's own `tojson` escapes `<>&'`)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def _basename(value: Any) -> str:
    return os.path.basename(str(value))


def _dirname(value: Any) -> str:
    return os.path.dirname(str(value))


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox plus size, loop and time bounds on everything a template builds (prompts/limits.py).

    Operators that can multiply size are intercepted; `for` loops and `~` are rewritten in the parse
    tree to go through counting helpers; every call, filter result, joined buffer and output value
    is measured before it can grow past ABP_MAX_PROMPT_CHARS.
    """

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    concat = staticmethod(limits.guarded_join)
    abp_loop = staticmethod(limits.guarded_loop)
    abp_concat = staticmethod(limits.guarded_concat)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        limits.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        limits.check_call(__obj, args, kwargs)
        return limits.check_after_call(__obj, super().call(__context, __obj, *args, **kwargs))

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _guard_tree(super()._parse(source, name, filename), self)


def _guard_tree(tree: nodes.Template, env: SandboxedEnvironment) -> nodes.Template:
    """Route every `for` loop's iterable and every `~` through the environment's counting helpers."""
    for loop in tree.find_all(nodes.For):
        loop.iter = _env_call("abp_loop", [cast(nodes.Expr, loop.iter)], env)  # jinja types it as Node
    for concat in list(tree.find_all(nodes.Concat)):
        concat.nodes = [_env_call("abp_concat", concat.nodes, env)]
    return tree


def _env_call(helper: str, args: list[nodes.Expr], env: SandboxedEnvironment) -> nodes.Call:
    lineno = args[0].lineno if args else 1
    call = nodes.Call(nodes.EnvironmentAttribute(helper, lineno=lineno), args, [], None, None, lineno=lineno)
    call.set_environment(env)
    return call


def _check_output(value: Any) -> Any:
    """Jinja's finalize: every `{{ value }}` is measured before it is turned into text."""
    return limits.check_value(value, "a value in {{ }}")


def _make_environment() -> SandboxedEnvironment:
    env = _BoundedEnvironment(
        undefined=_RecordingUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        comment_start_string="{##",
        comment_end_string="##}",
        finalize=_check_output,
    )
    env.filters["tojson"] = _tojson
    env.filters["basename"] = _basename
    env.filters["dirname"] = _dirname
    for name, func in list(env.filters.items()):
        env.filters[name] = limits.guard_filter(name, func)
    return env


ENVIRONMENT = _make_environment()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@functools.lru_cache(maxsize=256)
def _compile_cached(source: str) -> jinja2.Template:
    return ENVIRONMENT.from_string(source)


def compile_template(source: str, *, what: str = "prompt template") -> jinja2.Template:
    """Compile once per distinct source (cached): the executor renders the same template per unit."""
    try:
        return _compile_cached(source)
    except TemplateSyntaxError as exc:
        message = _one_line(exc.message or str(exc))
        raise PromptError(f"{what} line {exc.lineno}: {message}", hint=RAW_HINT) from None
    except Exception as exc:
        raise PromptError(f"{what} does not compile: {_one_line(str(exc))}", hint=RAW_HINT) from None


def template_context(payload: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Variables a template sees: fields at top level, `item`/`row` for the whole payload, then extras.

    Payload fields override `item`/`row` so a CSV column named `row` stays reachable; extras (prompt,
    unit, job) override everything because the caller chose them deliberately.
    """
    context: dict[str, Any] = {"item": payload, "row": payload}
    context.update(payload)
    context.update(extra)
    return context


def referenced_fields(source: str) -> set[str]:
    """Top-level names the template uses (e.g. `row`, `title`), for create-time checks and display."""
    try:
        ast = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise PromptError(
            f"prompt template line {exc.lineno}: {_one_line(exc.message or str(exc))}", hint=RAW_HINT
        ) from None
    return set(meta.find_undeclared_variables(ast))


def render(source: str, payload: Mapping[str, Any], **extra: Any) -> str:
    """Render one unit's prompt; every failure is a `PromptError` naming what went wrong."""
    return _render(source, payload, "prompt template", extra)


#: A template that is one `{{ expression }}` and nothing else (see `render_value`).
_ONE_EXPRESSION = re.compile(r"\{\{-?(?P<expr>(?:(?!\{\{|\}\}|\{%|%\}).)+?)-?\}\}", re.S)


def render_value(source: str, payload: Mapping[str, Any], *, what: str = "template", **extra: Any) -> Any:
    """Render a template that fills a JSON value (the `mcp` worker's tool arguments).

    A template that is exactly one `{{ expression }}` keeps the expression's JSON type (`"{{ n }}"`
    with n = 3 gives 3, `"{{ tags }}"` a list, a missing value in `default(none)` null): it is rendered
    through `tojson` and parsed back, with the same sandbox, limits and messages as any template.
    Anything else (`"file {{ path }}"`, `"{{ a }}{{ b }}"`) renders to text.
    """
    match = _ONE_EXPRESSION.fullmatch(source)
    if match is None:
        return _render(source, payload, what, extra)
    text = _render(f"{{{{ ({match.group('expr')}) | tojson(none) }}}}", payload, what, extra)
    return json.loads(text)


def validate(
    source: str,
    payloads: Iterable[Mapping[str, Any]],
    *,
    what: str = "prompt template",
    keys: Sequence[Any] | None = None,
    **extra: Any,
) -> list[str]:
    """Render against sample items at create time so a bad template fails before any agent runs.

    Returns the rendered prompts (shown as previews). The first failure raises, naming the item by
    index and by key: `keys[i]` when given, else the payload's `key`, `id` or `path` field.
    """
    compile_template(source, what=what)
    rendered: list[str] = []
    for index, payload in enumerate(payloads):
        try:
            rendered.append(_render(source, payload, what, extra))
        except PromptError as exc:
            raise PromptError(  # raw: a field reference in `what` (`--verify`) stays one
                f"{exc.raw_message} (item {_describe_item(index, payload, keys)})", hint=exc.raw_hint
            ) from None
    return rendered


def _describe_item(index: int, payload: Mapping[str, Any], keys: Sequence[Any] | None) -> str:
    key: Any = None
    if keys is not None and index < len(keys):
        key = keys[index]
    elif isinstance(payload, Mapping):
        key = next((payload[name] for name in ("key", "id", "path") if payload.get(name) is not None), None)
    return f"#{index}" if key is None else f"#{index}, key {str(key)!r}"


def _render(source: str, payload: Mapping[str, Any], what: str, extra: dict[str, Any]) -> str:
    template = compile_template(source, what=what)
    try:
        with limits.render_budget() as budget:
            pieces: list[str] = []
            size = 0
            for piece in template.generate(template_context(payload, **extra)):
                size += len(piece)
                budget.check_size(size, "the rendered text")
                budget.check_clock()
                pieces.append(piece)
            return "".join(pieces)
    except RenderLimitError as exc:
        line = _template_line(exc)
        where = f" line {line}" if line else ""
        raise PromptError(
            f"{what}{where}: {exc}",
            hint="a render is capped by ABP_MAX_PROMPT_CHARS (characters) and ABP_RENDER_SECONDS; "
            "raise them only if a prompt really needs more",
        ) from None
    except MissingReference as exc:
        raise _missing_reference_error(source, payload, what, exc) from None
    except SecurityError as exc:
        raise PromptError(
            f"{what} tried something the sandbox forbids: {_one_line(str(exc))}",
            hint="templates may read item fields and use filters, not Python internals",
        ) from None
    except UndefinedError as exc:
        raise PromptError(f"{what}: {_one_line(str(exc))}", hint=_fields_hint(None)) from None
    except Exception as exc:
        line = _template_line(exc)
        where = f" line {line}" if line else ""
        raise PromptError(
            f"{what}{where} failed to render: {type(exc).__name__}: {_one_line(str(exc))}"
        ) from None


def _template_line(exc: BaseException) -> int | None:
    """The template line Jinja put in the rewritten traceback (its fake frames are named <template>)."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<template>":
            line = lineno
    return line


def _list_keys(mapping: Mapping[Any, Any]) -> str:
    names = [str(k) for k in mapping]
    shown = ", ".join(names[:_MAX_LISTED_FIELDS])
    if len(names) > _MAX_LISTED_FIELDS:
        shown += f", ... ({len(names)} in all)"
    return shown or "none"


def _fields_hint(line: int | None) -> str:
    where = f"line {line}; " if line else ""
    return (
        f"{where}a template can use the item's fields by name, item/row for the whole item, and "
        "`{{ x | default('') }}` or `{% if x is defined %}` for fields some items lack"
    )


def _missing_reference_error(
    source: str, payload: Mapping[str, Any], what: str, exc: MissingReference
) -> PromptError:
    line = _template_line(exc)
    name = exc.name
    hint = _fields_hint(line)
    if name is None:
        return PromptError(f"{what}: {_one_line(str(exc))}", hint=hint)
    fields = _list_keys(payload) if isinstance(payload, Mapping) else "none"
    if exc.obj is missing:
        return PromptError(
            f"{what} uses {name!r} but the item has no field {name!r} (fields: {fields})", hint=hint
        )
    node = _find_lookup(source, name, line)
    reference = _expr_text(node) if node is not None else None
    base = _expr_text(node.node) if node is not None else None
    reference = reference or f"...{name}"
    if exc.obj is payload:
        detail = f"the item has no field {name!r} (fields: {fields})"
    elif isinstance(exc.obj, Mapping):
        detail = f"{base or 'the value'} has no key {name!r} (keys: {_list_keys(exc.obj)})"
    else:
        detail = f"{base or 'the value'} ({type(exc.obj).__name__}) has no attribute {name!r}"
    return PromptError(f"{what} uses {reference!r} but {detail}", hint=hint)


def _find_lookup(source: str, name: Any, line: int | None) -> nodes.Getattr | nodes.Getitem | None:
    """The `x.name` / `x["name"]` expression that failed, preferring one on the failing line."""
    try:
        ast = ENVIRONMENT.parse(source)
    except TemplateSyntaxError:
        return None
    found: list[nodes.Getattr | nodes.Getitem] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            looked_up = node.attr
        elif isinstance(node, nodes.Getitem):
            looked_up = getattr(node.arg, "value", missing)
        else:
            continue
        if looked_up == name:
            found.append(node)
    on_line = [node for node in found if node.lineno == line]
    candidates = on_line or found
    return candidates[0] if candidates else None


def _expr_text(node: nodes.Node) -> str | None:
    """Source-like text for a chain of names, attributes and constant subscripts; None otherwise."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _expr_text(node.node)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _expr_text(node.node)
        return f"{base}[{json.dumps(node.arg.value, ensure_ascii=False, default=str)}]" if base else None
    return None
