"""Source kinds are declared once (a `SourceKind` per module, listed in sources/registry.py) and
SourceSpec, the CLI's source flags, `list_sources` and the OpenAPI rules are all read from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from agentic_batch.cli.spec_options import SOURCE_FLAG_FIELDS
from agentic_batch.flags import flag_of
from agentic_batch.service.mcp_support import source_catalog
from agentic_batch.sources import SourceKind, SourceSpec, describe_source, get_source_kind, source_kinds
from agentic_batch.sources.registry import build_source_spec, required_fields


def test_every_kind_is_reachable_from_each_interface() -> None:
    catalog = {entry.kind: entry for entry in source_catalog()}
    for name in source_kinds():
        kind = get_source_kind(name)
        own_flag = [f for f, info in kind.options_model.model_fields.items()
                    if (flag := flag_of(info)) is not None and flag.flag(f) == f"--{name}"]
        assert len(own_flag) == 1, f"{name}: one field must carry the flag --{name} (the CLI chooses kinds by it)"
        assert SOURCE_FLAG_FIELDS[name] == (own_flag[0], [name])
        assert set(kind.options_model.model_fields) <= set(SourceSpec.model_fields)
        assert [f for f, entry in catalog[name].fields.items() if entry.required] == required_fields(kind)
        assert catalog[name].items == kind.items


def test_a_kind_says_what_it_needs_in_field_words() -> None:
    with pytest.raises(ValidationError, match=r"a sql source needs «source.query», «source.db_url»"):
        SourceSpec(kind="sql")
    with pytest.raises(ValidationError, match=r"a files source needs «source.glob»"):
        SourceSpec(kind="files", glob="")  # given but empty is not given
    with pytest.raises(ValidationError, match=r"«source.delimiter» must be one character, got ';;'"):
        SourceSpec(kind="csv", path="x.csv", delimiter=";;")
    with pytest.raises(ValidationError, match="kind"):
        SourceSpec(kind="parquet", path="x")


def test_stored_sources_of_every_shape_still_read() -> None:
    """A job stored before the registry keeps every flat field (nulls included); it reads back unchanged."""
    stored = {"kind": "csv", "glob": None, "root": None, "path": "/d/x.csv", "delimiter": ";", "json_path": None,
              "query": None, "db_url": None, "function": None, "args": {}, "key": "id", "priority_field": None}
    spec = SourceSpec.model_validate(stored)
    assert spec.model_dump() == stored
    assert describe_source(spec) == "csv /d/x.csv (delimiter ';')"


def test_kinds_sharing_a_field_must_agree_on_its_type() -> None:
    class A(BaseModel):
        path: str

    class B(BaseModel):
        path: int

    def kind(name: str, model: type[BaseModel]) -> SourceKind[BaseModel]:
        return SourceKind(name=name, items="", options_model=model, iterate=lambda o, cwd: iter(()),
                          resolve=lambda o, cwd: o, describe=lambda o: name)

    built = build_source_spec({"a": kind("a", A), "a2": kind("a2", A)})
    assert set(built.model_fields) == {"kind", "key", "priority_field", "path"}
    with pytest.raises(TypeError, match="'path' has another type"):
        build_source_spec({"a": kind("a", A), "b": kind("b", B)})


def test_resolve_is_the_kinds_own(tmp_path: Path) -> None:
    from agentic_batch.sources import resolve_spec

    spec = resolve_spec(SourceSpec(kind="python", function="m:f", root="lib"), tmp_path)
    assert spec.model_dump()["root"] == str(tmp_path / "lib")  # python's root is a path too
    again = resolve_spec(spec, tmp_path / "elsewhere")
    assert again == spec  # idempotent
