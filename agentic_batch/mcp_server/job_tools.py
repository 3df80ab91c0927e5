"""Tools that make and start jobs: create_job, start_job (test first, then approve), edit_prompt, list_sources.

The descriptions are written for a model: they carry the test-first protocol, because an assistant
that approves its own test run would spend the user's money without asking.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from agentic_batch.errors import InvalidSpec
from agentic_batch.mcp_server.replies import in_thread, respond, respond_async
from agentic_batch.flags import Flag
from agentic_batch.mcp_server.schemas import JobRef, SourceArg
from agentic_batch.mcp_server.shaping import clip, status_view, unit_view
from agentic_batch.mcp_server.test_wait import follow_test, lost_view, still_running_view
from agentic_batch.mcp_server.outputs import CreatedReply, JobStatusReply, StartReply
from agentic_batch.mcp_server.toolkit import add_tool
from agentic_batch.service import Orchestrator
from agentic_batch.service.mcp_support import capabilities_brief, capability_details
from agentic_batch.service.models import CreatedJob, JobView, TestUnderWay, UnitDetail
from agentic_batch.spec import JobSpec, job_default
from agentic_batch.states import JobStatus, UnitStatus

PREVIEW_CHARS = 1500
TEMPLATE_CHARS = 6000
TEST_OUTPUT_CHARS = 3000


def created_view(result: CreatedJob, worker: str) -> dict[str, Any]:
    template, _ = clip(result.prompt_template, TEMPLATE_CHARS)
    view: dict[str, Any] = {
        "job_id": result.job_id, "name": result.name, "status": JobStatus.CREATED, "units": result.units,
        "source": result.source, "worker": worker, "prompt_template": template,
        "preview_prompts": [clip(p, PREVIEW_CHARS)[0] for p in result.previews],
        "next_step": (f"Tell the user the job has {result.units} unit(s)"
                      + (" and show them the prompt written from the intent" if result.synthesized else "")
                      + f". Then call start_job(job_id={result.job_id}) to run the first unit as a test."),
    }
    if result.duplicates:
        view["duplicates_skipped"] = result.duplicates
    if result.synthesized:
        view["prompt_synthesized"] = True
    return view


def tested_view(report: UnitDetail, status: JobView) -> dict[str, Any]:
    job_id, total = status.id, status.total
    unit = unit_view(report, TEST_OUTPUT_CHARS)
    passed = report.status == UnitStatus.COMPLETED
    view: dict[str, Any] = {
        "job_id": job_id, "job_status": status.status, "test_passed": passed, "test_unit": unit,
        "remaining_units": max(total - 1, 0),
    }
    if report.cost_usd:
        view["estimated_total_cost_usd"] = round(report.cost_usd * total, 4)
    view["next_step"] = (
        f"Show the user this test output{' and error' if not passed else ''} (and its cost), then ASK whether to "
        f"run the remaining {max(total - 1, 0)} unit(s). Only after the user agrees, call start_job(job_id={job_id}, "
        f"approve=true). To change the prompt instead: start_job(job_id={job_id}, reject=true), then "
        f"edit_prompt, then start_job(job_id={job_id}) to test again."
    )
    return view


def started_view(status: JobView, how: str) -> dict[str, Any]:
    view = status_view(status)
    view["message"] = (f"Job {status.id} {how}: a detached executor (pid {status.executor.pid}) works through "
                       f"{status.pending + status.running} unit(s) in the background. It keeps running if "
                       "this conversation or the MCP server ends.")
    return view


CREATE_JOB_DOC = """Create a batch job: one unit per item of a source (files, CSV/JSON/JSONL rows, SQL rows, a Python
generator), each processed by a worker with a prompt rendered from the item.

Use this when the user wants the same task done for many items (tens to hundreds of thousands).
Pass the source as a path or query; abp reads the items itself, so never put the item list in the
conversation. Nothing runs yet. Returns the job id, the number of units, the prompt template
(written for you when you give `intent`) and the first rendered prompts as a preview.

Then follow the test-first protocol: start_job(job_id) runs ONE unit and returns its output; show
it to the user and ask for approval; start_job(job_id, approve=true) starts the rest in the
background and returns at once; follow progress with get_job_status. Call list_sources for the
fields of each source kind and the options of each worker kind.
"""


def create_job_params() -> list[inspect.Parameter]:
    """create_job's arguments: JobSpec's fields, each with its type, range, default and description.

    Only `source` is published differently: as an object with SourceSpec's schema (and the catalogue's
    words) that the SDK passes on unchecked, so JobSpec's own validation words every mistake in it.
    """
    params = []
    for name, field in JobSpec.model_fields.items():
        annotation: Any
        if name == "source":
            annotation, default = SourceArg, inspect.Parameter.empty
        else:
            kind: Any = field.annotation
            if isinstance(kind, type) and issubclass(kind, Enum):  # by value, inline: no $defs in the schema
                kind = Literal[tuple(member.value for member in kind)]
            constraints = [m for m in field.metadata if not isinstance(m, Flag)]
            annotation = Annotated[kind, *constraints, Field(description=field.description)]
            default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
            if isinstance(default, Enum):
                default = default.value
            elif isinstance(default, dict | list):  # a default_factory: leave it to JobSpec
                annotation, default = Annotated[kind | None, *constraints,
                                                Field(description=field.description)], None
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))
    return params


def register(server: MCPServer[Any], orch: Orchestrator) -> None:
    async def create_job(**arguments: Any) -> CallToolResult:
        def call() -> dict[str, Any]:
            spec = {name: value for name, value in arguments.items() if value is not None}
            spec["source"] = _source(arguments["source"])
            return created_view(orch.create(spec, cwd=Path.cwd()), spec.get("worker") or job_default("worker"))

        return await respond(call)

    create_job.__signature__ = inspect.Signature(create_job_params(),  # type: ignore[attr-defined]
                                                 return_annotation=Annotated[CallToolResult, CreatedReply])
    create_job.__doc__ = CREATE_JOB_DOC

    async def start_job(
        job_id: JobRef,
        approve: Annotated[bool, Field(description="Approve a tested job (status TESTING): start the "
                                                   "remaining units in a detached executor.")] = False,
        reject: Annotated[bool, Field(description="Reject a tested job: back to CREATED so edit_prompt can "
                                                  "change the prompt.")] = False,
        skip_test: Annotated[bool, Field(description="Start all units without a test run. Only when the user "
                                                     "explicitly asked to skip the test.")] = False,
        ctx: Context | None = None,  # injected by the SDK, not an argument
    ) -> Annotated[CallToolResult, StartReply]:
        """Start a job, test first.

        On a CREATED job this runs the FIRST unit as a test and returns its output, error, cost and a
        conversation summary; the job is then TESTING. Show that output to the user and ask them to
        approve. Do not approve on the user's behalf. A long test unit keeps running in the background:
        if it is not done within about 50 s this returns test_running=true; call start_job again to wait
        for it (progress notifications are sent meanwhile).
        With approve=true (after the user agreed) it starts the remaining units in a detached background
        executor and returns at once; poll get_job_status for progress. The job keeps running if this
        conversation or the MCP server ends. With reject=true the job goes back to CREATED: call
        edit_prompt, then start_job again to re-test. skip_test=true starts everything without a test.
        Calling it again on a TESTING job returns the waiting test result.
        """
        def steer() -> dict[str, Any]:
            if approve and reject:
                raise InvalidSpec("give approve or reject, not both")
            if approve:
                return started_view(orch.approve(job_id), "approved")
            if reject:
                view = status_view(orch.reject(job_id))
                view["next_step"] = (f"Change the prompt with edit_prompt(job_id={view['id']}, prompt=...), then "
                                     f"call start_job(job_id={view['id']}) to test again.")
                return view
            started = orch.start(job_id, skip_test=True)
            assert isinstance(started, JobView)  # skip_test: no test report
            return started_view(started, "started without a test")

        async def test() -> dict[str, Any]:
            progress = await follow_test(orch, job_id, ctx)
            if isinstance(progress, TestUnderWay):
                return still_running_view(progress)
            if progress.state == "none":
                return lost_view(progress)
            job = progress.job_id
            return tested_view(await in_thread(orch.test_report, job), await in_thread(orch.status, job))

        if approve or reject or skip_test or orch.settings.skip_test:
            return await respond(steer)
        return await respond_async(test)

    async def edit_prompt(
        job_id: JobRef,
        prompt: Annotated[str, Field(description="The new Jinja2 template over the item fields.")],
    ) -> Annotated[CallToolResult, JobStatusReply]:
        """Replace a job's prompt template (jobs that are CREATED, TESTING, PAUSED or FAILED; COMPLETED too for a
        job made with cache=true, whose retry_failed then re-runs only the units whose prompt changed).

        The template is checked against the first items before it is saved. A TESTING job goes back to
        CREATED: call start_job to run a new test. Units not yet completed use the new prompt.
        Returns the job status.
        """
        def call() -> dict[str, Any]:
            view = status_view(orch.edit_prompt(job_id, prompt))
            view["message"] = f"Prompt of job {view['id']} replaced."
            return view

        return await respond(call)

    async def list_sources(
        kind: Annotated[str | None, Field(description="A source kind (csv, files, ...) or worker kind (command, "
                                                       "claude, ...): its fields or options in full, with types, "
                                                       "defaults and descriptions.")] = None,
    ) -> CallToolResult:
        """List the source kinds (where items come from, and the fields each needs) and the worker kinds
        (what processes each item, and their option names), one line each. With kind=..., one kind's
        fields or options in full.

        Use it before create_job when unsure how to describe a source or which worker options exist.
        """
        return await respond(lambda: capability_details(kind) if kind else capabilities_brief())

    add_tool(server, create_job, title="Create a batch job")
    add_tool(server, start_job, title="Test, approve or start a job")
    add_tool(server, edit_prompt, title="Edit a job's prompt", idempotent=True)
    add_tool(server, list_sources, title="List source and worker kinds", read_only=True, idempotent=True)


def _source(raw: dict[str, Any]) -> dict[str, Any]:
    """Python-source args are strings on the command line; a model may send numbers."""
    source = dict(raw)
    if isinstance(source.get("args"), dict):
        source["args"] = {str(k): v if isinstance(v, str) else str(v) for k, v in source["args"].items()}
    return source
