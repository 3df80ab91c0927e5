"""The three ways to create a job take the same options: REST's body (JobSpec in /openapi.json), MCP
`create_job`'s arguments and `abp create`'s flags are all generated from JobSpec and the source kinds,
so an option added to one and not the others (MCP once lacked rpm, tpm and quota_wait_s) fails here."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer.main

from agentic_batch.cli.spec_options import flag_for, worker_params
from agentic_batch.sources.kind import SourceSpecBase
from agentic_batch.sources.registry import get_source_kind, source_kinds
from agentic_batch.spec import JobSpec, SourceSpec

#: JobSpec fields the CLI fills otherwise: the worker's options have flags of their own (one per
#: option of every worker kind) and the job runs where `abp create` is run.
CLI_BUILDS_ITSELF = {"worker_options", "workdir"}
#: Flags of the CLI alone: a prompt read from a file, and `--json` output (a hidden `--json-output`).
CLI_ONLY_FLAGS = {"--prompt-file", "--json-output", "--help"}


def cli_flags() -> set[str]:
    from agentic_batch.cli import _register, app

    _register()  # every command (another test may have registered one module of them)
    command = typer.main.get_command(app).commands["create"]  # type: ignore[attr-defined]
    _, worker_options = worker_params()
    return {name for param in command.params if param.name not in worker_options  # worker flags: their own test
            for name in (*param.opts, *param.secondary_opts)}


def mcp_create_job_schema(orch: Any) -> dict[str, Any]:
    from agentic_batch.mcp_server.server import build_server

    tools = asyncio.run(build_server(orch).list_tools())
    return next(tool.input_schema for tool in tools if tool.name == "create_job")


def rest_schemas(orch: Any, tmp_path: Path) -> dict[str, Any]:
    from agentic_batch.web.app import create_app
    from agentic_batch.web.config import WebConfig

    document = create_app(orch, WebConfig(cwd=tmp_path)).openapi()
    assert document["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSpec"}
    return document["components"]["schemas"]  # type: ignore[no-any-return]


def source_flags() -> set[str]:
    """The CLI's flag for each source field, for every kind that has the field (`path`: --csv, --json...);
    a field without a flag (python's `root`) is named by another kind's flag (files' `--root`)."""
    flags = {flag_for(f"source.{name}") for name in SourceSpecBase.model_fields if name != "kind"}
    for kind in source_kinds():  # `kind` itself is which kind's flag is given
        flags |= {flag_for(f"source.{name}", kind) for name in get_source_kind(kind).options_model.model_fields}
    return flags


def test_rest_mcp_and_cli_take_the_same_job_options(orch: Any, tmp_path: Path) -> None:
    options = set(JobSpec.model_fields)
    schemas = rest_schemas(orch, tmp_path)
    mcp = mcp_create_job_schema(orch)

    assert set(schemas["JobSpec"]["properties"]) == options
    assert set(mcp["properties"]) == options
    assert set(schemas["JobSpec"]["required"]) == set(mcp["required"]) == {"name", "source"}
    for name, prop in mcp["properties"].items():  # the same defaults and ranges
        if name in ("source", "worker_options"):
            continue
        rest = schemas["JobSpec"]["properties"][name]
        for key in ("default", "minimum", "maximum", "exclusiveMinimum", "maxLength"):
            assert prop.get(key) == rest.get(key), (name, key, prop, rest)

    sources = set(SourceSpec.model_fields)
    assert set(schemas["SourceSpec"]["properties"]) == sources == set(mcp["properties"]["source"]["properties"])

    flags = cli_flags()
    job_flags = {flag_for(name) for name in options - CLI_BUILDS_ITSELF - {"source"}}
    assert job_flags <= flags, job_flags - flags
    assert source_flags() <= flags, source_flags() - flags
    # and nothing else: every other flag of `abp create` is one of those
    assert flags - job_flags - source_flags() - CLI_ONLY_FLAGS == set()
