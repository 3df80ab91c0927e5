"""Source kinds by name, and `SourceSpec`: the one source object every interface takes, made of them.

A new kind is a module that declares `KIND = SourceKind(...)` (or `KINDS`, for a module with several)
plus its line in `_MODULES`: its fields then appear in `SourceSpec` (so in REST's and MCP's schemas),
its flags in `abp create --help`, and its words in `list_sources`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, create_model, model_validator

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.sources.kind import SourceKind, SourceSpecBase

#: Each module declares `KIND` (or `KINDS`); the order is the order of `--help` and `list_sources`.
_MODULES = (
    "agentic_batch.sources.files",
    "agentic_batch.sources.tabular",
    "agentic_batch.sources.json_stream",
    "agentic_batch.sources.sql",
    "agentic_batch.sources.python_source",
)


def _load() -> dict[str, SourceKind[Any]]:
    kinds: dict[str, SourceKind[Any]] = {}
    for module_name in _MODULES:
        module = importlib.import_module(module_name)
        for kind in getattr(module, "KINDS", None) or (module.KIND,):
            kinds[kind.name] = kind
    return kinds


KINDS = _load()


def source_kinds() -> list[str]:
    return list(KINDS)


def get_source_kind(name: str) -> SourceKind[Any]:
    kind = KINDS.get(name)
    if kind is None:
        raise InvalidSpec(f"unknown source kind {name!r}", hint=f"choose one of: {', '.join(KINDS)}")
    return kind


def required_fields(kind: SourceKind[Any]) -> list[str]:
    return [name for name, field in kind.options_model.model_fields.items() if field.is_required()]


#: JSON Schema keywords of a kind's field that the flat SourceSpec repeats per kind (see below).
_CONSTRAINTS = ("type", "minLength", "maxLength", "pattern", "minimum", "maximum", "enum")


def _document_kind_rules(schema: dict[str, Any]) -> None:
    """The JSON Schema says what `_kind_rules` checks: per kind, the fields it needs are given and not
    empty, and its fields' own constraints hold (csv's one-character delimiter), so a client or a
    fuzzer reading /openapi.json knows them."""
    rules = []
    for kind in KINDS.values():
        needs = required_fields(kind)
        properties = {}
        for name, prop in kind.options_model.model_json_schema().get("properties", {}).items():
            rule = {key: prop[key] for key in _CONSTRAINTS if key in prop}
            if name in needs and rule.get("type") == "string":
                rule.setdefault("minLength", 1)
            if name in needs or set(rule) - {"type"}:
                properties[name] = rule
        then: dict[str, Any] = {"required": needs, "properties": properties} if needs else {"properties": properties}
        rules.append({"if": {"properties": {"kind": {"const": kind.name}}, "required": ["kind"]}, "then": then})
    schema["allOf"] = rules


class _KindRules(SourceSpecBase):
    """The checks of the chosen kind: the fields it needs are given, then its own rules."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_kind_rules)

    @model_validator(mode="after")
    def _kind_rules(self) -> _KindRules:
        kind = KINDS[self.kind]
        missing = [name for name in required_fields(kind) if not getattr(self, name)]
        if missing:
            names = ", ".join(field_ref(f"source.{name}") for name in missing)
            raise ValueError(f"a {kind.name} source needs {names}")
        try:
            kind.options(self)
        except ValidationError as exc:
            raise ValueError("; ".join(_said(err) for err in exc.errors())) from None
        return self


def _said(err: Any) -> str:
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{field_ref('source.' + loc)}: {msg}" if loc else msg


def build_source_spec(kinds: dict[str, SourceKind[Any]]) -> type[SourceSpecBase]:
    """Every kind's fields side by side, each optional here (the kind's rules say which it needs)."""
    fields: dict[str, Any] = {}
    for kind in kinds.values():
        for name, field in kind.options_model.model_fields.items():
            if name in SourceSpecBase.model_fields:
                raise TypeError(f"source kind {kind.name}: {name!r} is a field of every source")
            annotation = field.annotation if not field.is_required() else field.annotation | None
            if name in fields:
                if fields[name][0] != annotation:
                    raise TypeError(f"source kind {kind.name}: {name!r} has another type in an earlier kind")
                continue
            if field.default_factory is not None:
                info = Field(default_factory=field.default_factory, description=field.description)
            else:
                info = Field(None if field.is_required() else field.default, description=field.description)
            fields[name] = (annotation, info)
    names: Any = Literal[tuple(kinds)]
    kind_field = Field(description="source type: " + ", ".join(f"{k.name} ({k.items.split(';')[0]})"
                                                                for k in kinds.values()))
    return create_model("SourceSpec", __base__=_KindRules, __module__=__name__,
                        __doc__="Where the items come from: `kind` and that kind's fields.",
                        kind=(names, kind_field), **fields)


if TYPE_CHECKING:
    SourceSpec = SourceSpecBase
else:
    SourceSpec = build_source_spec(KINDS)

