"""REST: jobs. List, get, create (the CLI's spec as JSON), and every state change the CLI has.

Plain `def` routes: FastAPI runs them in its thread pool, because service calls block (a test run
executes an agent; creating a job streams its whole source into the store).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from agentic_batch.errors import InvalidSpec
from agentic_batch.refs import MAX_ID
from agentic_batch.service import Orchestrator
from agentic_batch.service.browse import JOB_STATUSES, MAX_PAGE
from agentic_batch.service.clearing_models import DeletedJobs, PrunedJobs
from agentic_batch.service.error_groups import MAX_EXAMPLES, MAX_GROUPS
from agentic_batch.service.models import (ActiveUnit, CreatedJob, ErrorSummary, JobsPage, JobView, ResumeAllReport,
                                          RetriedJob, StartedJob, SyncResult, Timeseries, UnitDetail)
from agentic_batch.spec import JobSpec
from agentic_batch.workers import get_worker_kind, worker_kinds
from agentic_batch.web.deps import orchestrator, web_config
from agentic_batch.web.errors import read_json
from agentic_batch.web.openapi_doc import word_list

router = APIRouter(prefix="/api", tags=["jobs"])
Orch = Annotated[Orchestrator, Depends(orchestrator)]
JOB_DOC = "Job id, its name when unique, or `last`."


class StartRequest(BaseModel):
    """Like `abp start JOB [--skip-test] [--approve | --reject]`."""

    # approve and reject exclude each other (the schema says so, for clients and fuzzers alike)
    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": {
        "required": ["approve", "reject"], "properties": {"approve": {"const": True}, "reject": {"const": True}}}})
    skip_test: bool = Field(default=False, description="Start the executor without running the first unit as a test.")
    approve: bool = Field(default=False, description="Approve a TESTING job: start its executor.")
    reject: bool = Field(default=False, description="Reject a TESTING job: back to CREATED, to edit the prompt.")


class RetryRequest(BaseModel):
    # error_group and include_cancelled exclude each other (an error group holds failed units only)
    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": {
        "required": ["error_group", "include_cancelled"],
        "properties": {"error_group": {"type": "integer"}, "include_cancelled": {"const": True}}}})
    include_cancelled: bool = Field(default=False, description="Also queue CANCELLED units again.")
    error_group: int | None = Field(default=None, ge=1, le=MAX_ID, description="Only the failed units of this "
                                    "error group (its number in `GET /api/jobs/{job}/errors`).")


class PromptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(description="The new Jinja2 prompt template (validated against the first items).")


class PruneRequest(BaseModel):
    """Like `abp prune [--status S] [--older-than AGE] [--dry-run]`."""

    model_config = ConfigDict(extra="forbid")
    status: list[Literal["completed", "cancelled", "failed"]] | None = Field(
        default=None, min_length=1, description="Job statuses to prune (default: completed, cancelled, failed).")
    older_than: str | None = Field(default=None, max_length=40, pattern=r"^\s*\d+(\.\d+)?\s*[smhdw]?\s*$",
                                   description="Only jobs that ended longer ago than this: 90s, 30m, 12h, 7d, 2w.")
    dry_run: StrictBool = Field(default=False, description="List the jobs; delete nothing.")


def spec_openapi() -> dict[str, Any]:
    """The request body of `POST /api/jobs` in the OpenAPI document: JobSpec's JSON Schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/JobSpec"}}}}}


@router.get("/jobs", summary="List jobs")
def list_jobs(orch: Orch,
              status: Annotated[str | None, Query(description="Comma list of job statuses: running,paused",
                                                  json_schema_extra=word_list(JOB_STATUSES))] = None,
              q: Annotated[str | None, Query(description="Only jobs whose name contains this")] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 50,
              offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip")] = 0) -> JobsPage:
    """Newest first, each with counts, progress, rate, ETA and cost; `total` counts every match."""
    return orch.jobs_page(status=status, search=q, limit=limit, offset=offset)


@router.post("/jobs", status_code=201, summary="Create a job", openapi_extra=spec_openapi())
async def create_job(request: Request) -> CreatedJob:
    """The same spec as `abp create`, as JSON (see the JobSpec schema). Without `workdir`, the job
    runs in the directory `abp serve` was started from; relative paths resolve against it. The job
    is CREATED: start it with `POST /api/jobs/{job}/start`."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidSpec("the request body must be a JSON object (a job spec)")
    orch: Orchestrator = orchestrator(request)
    result = await run_in_threadpool(orch.create, body, web_config(request).cwd)
    return result


@router.post("/resume-all", summary="Resume every RUNNING job whose executor is gone")
def resume_all(orch: Orch) -> ResumeAllReport:
    """What `abp resume --all` does after a reboot: each RUNNING job is reported as `resumed` (a new
    executor), `running` (its executor is alive) or `skipped` (with the reason)."""
    return orch.resume_all()


@router.post("/jobs/prune", summary="Delete finished jobs")
def prune_jobs(orch: Orch, body: PruneRequest | None = None) -> PrunedJobs:
    """Like `abp prune`: every COMPLETED, CANCELLED or FAILED job (or those of `status`) that ended more
    than `older_than` ago is deleted as `DELETE /api/jobs/{job}` deletes one; `dry_run` lists them."""
    body = body or PruneRequest()
    return orch.prune(body.status, body.older_than, dry_run=body.dry_run)


@router.delete("/jobs/{job}", summary="Delete a job")
def delete_job(job: str, orch: Orch,
               force: Annotated[bool, Query(description="Cancel a RUNNING job first (waits for its executors to "
                                                        "stop), then delete it.")] = False) -> DeletedJobs:
    """Like `abp delete`: the job's units, results, events, logs, its files under ABP_HOME and, for an
    isolated job, its worktrees and unit branches (the applied branch stays). A RUNNING job is a 409
    unless `force`."""
    return orch.delete([job], force=force)


@router.get("/jobs/{job}", summary="Job status")
def get_job(job: str, orch: Orch) -> JobView:
    """Counts per unit status, progress, rate, ETA, elapsed, cost (spent and projected), executor."""
    return orch.status(job)


@router.post("/jobs/{job}/start", summary="Start (test first), approve or reject")
def start_job(job: str, orch: Orch, body: StartRequest | None = None) -> StartedJob | JobView | UnitDetail:
    """A CREATED job runs its first unit now as a test (the answer is that unit, the job is then
    TESTING) unless `skip_test`; `approve` / `reject` answer a TESTING job. A started job's `plan` says how
    many units the result cache completed, how many are left to run and what they may cost."""
    body = body or StartRequest()
    if body.approve and body.reject:
        raise InvalidSpec("give approve or reject, not both")
    if body.approve:
        return orch.approve(job)
    if body.reject:
        return orch.reject(job)
    return orch.start(job, skip_test=body.skip_test)


@router.post("/jobs/{job}/approve", summary="Approve the test result and run the job")
def approve_job(job: str, orch: Orch) -> StartedJob:
    return orch.approve(job)


@router.post("/jobs/{job}/reject", summary="Reject the test result (back to CREATED)")
def reject_job(job: str, orch: Orch) -> JobView:
    return orch.reject(job)


@router.post("/jobs/{job}/stop", summary="Pause a running job")
def stop_job(job: str, orch: Orch) -> JobView:
    """In-flight units finish within the grace period, the rest stay PENDING; the job becomes PAUSED
    (the answer may still say RUNNING while the executor winds down)."""
    return orch.stop(job)


@router.post("/jobs/{job}/resume", summary="Resume a paused job")
def resume_job(job: str, orch: Orch) -> StartedJob:
    return orch.resume(job)


@router.post("/jobs/{job}/cancel", summary="Cancel a job")
def cancel_job(job: str, orch: Orch) -> JobView:
    return orch.cancel(job)


@router.post("/jobs/{job}/retry", summary="Retry failed units")
def retry_job(job: str, orch: Orch, body: RetryRequest | None = None) -> RetriedJob:
    """Failed units (and cancelled ones if asked, or only one error group's) go back to PENDING with fresh
    retries; the job runs. A `cache` job also re-runs the completed units whose prompt an edit changed
    (`plan` counts them)."""
    body = body or RetryRequest()
    return orch.retry(job, include_cancelled=body.include_cancelled, error_group=body.error_group)


@router.get("/jobs/{job}/errors", summary="Failed units grouped by cause")
def error_summary(job: str, orch: Orch,
                  examples: Annotated[int, Query(ge=0, le=MAX_EXAMPLES, description="Example units per group")] = 3,
                  limit: Annotated[int, Query(ge=1, le=MAX_GROUPS, description="Groups, largest first")] = 50
                  ) -> ErrorSummary:
    """Failed units grouped by error class, kind and signature (the error with numbers, paths, ids, hex,
    UUIDs and quoted values masked), largest group first; retry one with `POST .../retry
    {"error_group": N}`."""
    return orch.error_summary(job, examples=examples, limit=limit)


@router.put("/jobs/{job}/prompt", summary="Edit the prompt template")
def edit_prompt(job: str, body: PromptRequest, orch: Orch) -> JobView:
    """Allowed while CREATED, TESTING (back to CREATED), PAUSED or FAILED (and COMPLETED for a `cache` job);
    units not yet completed use it."""
    return orch.edit_prompt(job, body.prompt)


@router.post("/jobs/{job}/sync", summary="Add new items from the source")
def sync_job(job: str, orch: Orch) -> SyncResult:
    return orch.sync(job)


@router.get("/jobs/{job}/test", summary="The test unit's result")
def test_report(job: str, orch: Orch) -> UnitDetail:
    """The first unit's run (output, conversation, cost) that a TESTING job waits on."""
    return orch.test_report(job)


@router.get("/jobs/{job}/active", summary="Units running now")
def active_units(job: str, orch: Orch,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[ActiveUnit]:
    """Each running unit with its attempt, elapsed time and newest event (its latest tool call)."""
    return orch.active_units(job, limit=limit)


@router.get("/jobs/{job}/timeseries", summary="Throughput and cost over time")
def timeseries(job: str, orch: Orch,
               buckets: Annotated[int, Query(ge=1, le=1000, description="About how many points")] = 60
               ) -> Timeseries:
    return orch.timeseries(job, buckets=buckets)


def register_schemas(openapi: dict[str, Any]) -> None:
    """Put JobSpec (and the models it uses) into the OpenAPI document's components, with each worker
    kind's options model as what `worker_options` must be for that `worker` (the default, `command`,
    applies when `worker` is left out, as it does on create).

    The rule is one `anyOf` with a branch per worker kind, not an `if`/`then` per kind under `allOf`:
    both say the same, but a generator (schemathesis, through hypothesis-jsonschema) expands each
    `if`/`then` into two branches and an `allOf` of six of them into 2**6 combinations, and gave up on
    the request body ("Schema Error") when the sixth worker kind (`mcp`) arrived."""
    template = "#/components/schemas/{model}"
    schema = JobSpec.model_json_schema(ref_template=template)
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    default_worker = JobSpec.model_fields["worker"].default
    branches = []
    for name in worker_kinds():
        try:
            model = get_worker_kind(name).options_model
        except Exception:  # an optional SDK missing: that kind is not documented (create says why)
            continue
        options = model.model_json_schema(ref_template=template)
        components.update(options.pop("$defs", {}))
        components[model.__name__] = options
        required = [] if name == default_worker else ["worker"]
        if options.get("required"):  # then worker_options itself cannot be left out
            required.append("worker_options")
        branch: dict[str, Any] = {"properties": {"worker": {"const": name},
                                                 "worker_options": {"$ref": template.format(model=model.__name__)}}}
        if required:
            branch["required"] = required
        branches.append(branch)
    schema["anyOf"] = branches
    schema["properties"]["worker"]["enum"] = list(worker_kinds())  # the registered kinds, as create checks
    components["JobSpec"] = schema
