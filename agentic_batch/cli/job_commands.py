"""`abp create`, `abp run`, `abp start`, `abp edit`, `abp sync`: making jobs and starting them."""

from __future__ import annotations

import inspect
import sys
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.text import Text

from agentic_batch.cli.common import JobArg, JsonFlag, orchestrator
from agentic_batch.cli.output import err, out, plan_line, print_json, safe, unit_report
from agentic_batch.cli.spec_options import build_signature, read_text_file, spec_from_options
from agentic_batch.errors import InvalidSpec
from agentic_batch.service import Orchestrator
from agentic_batch.service.models import JobView, StartedJob, UnitDetail, UnitView
from agentic_batch.states import JobStatus, UnitStatus

CREATE_HELP = """Create a job: one unit per item of the source, and a prompt per unit.

Prints the job id on stdout (with `--json`: `{"job_id": ...}`); details go to stderr. Nothing runs yet:
`abp start JOB` tests the first item, then `--approve` starts the rest.

Examples:

    abp create --name wc --files '**/*.md' --command 'wc -w {{ path }}'
    abp create --name tickets --csv tickets.csv --key id --worker claude \\
        --intent 'Classify the ticket as bug, feature or question'
"""

RUN_HELP = """Create a job, test it on the first item, confirm, start it and watch it: all in one.

`--yes` skips the confirmation (but stops after a failed test unless `--force`); `--wait` blocks until
the job ends and exits 0 (COMPLETED) or 1.
"""


def _describe_created(result: Any, spec_worker: str) -> None:
    err.print(safe(f"Created job {result.job_id} “{result.name}”: {result.units} unit(s) from {result.source} "
                   f"(worker: {spec_worker})", style="bold"))
    if result.duplicates:
        err.print(Text(f"{result.duplicates} duplicate item(s) skipped (same key)", style="yellow"))
    if result.same_name_jobs:
        others = ", ".join(str(i) for i in result.same_name_jobs)
        which = f"jobs {others} have" if len(result.same_name_jobs) > 1 else f"job {others} has"
        err.print(Text(f"{which} the same name: refer to this one by its id {result.job_id}", style="yellow"))
    for warning in getattr(result, "warnings", None) or []:
        err.print(Text(f"warning: {warning}", style="yellow"))
    if result.synthesized and result.prompt_template:
        err.print(Panel(safe(result.prompt_template, multiline=True), title="prompt written from --intent",
                        title_align="left"),
                  soft_wrap=False)  # the console soft-wraps (one-line errors); a panel must wrap, not crop
    if result.previews:
        err.print(Panel(safe(result.previews[0], multiline=True), title="first prompt, rendered", title_align="left",
                        style="dim"),
                  soft_wrap=False)


def _create(values: dict[str, Any], owners: dict[str, list[str]]) -> Any:
    spec = spec_from_options(values, owners)
    return spec, orchestrator().create(spec)


def register(app: typer.Typer) -> None:
    create_sig, owners = build_signature([])

    def create(**values: Any) -> None:
        spec, result = _create(values, owners)
        if values.get("json_output"):
            print_json(result)
        else:
            _describe_created(result, spec.worker)
            err.print(f"Next: [bold]abp start {result.job_id}[/bold] (runs the first unit as a test)")
            print(result.job_id)

    create.__signature__ = create_sig  # type: ignore[attr-defined]
    app.command("create", help=CREATE_HELP)(create)

    run_extra = [
        inspect.Parameter("yes", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--yes", "-y", help="Start after the test without asking.")]),
        inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--wait", help="Block until the job ends; exit 0 if COMPLETED, else 1.")]),
        inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--force", help="With --yes: start the rest even if the test unit failed.")]),
        inspect.Parameter("skip_test", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--skip-test", help="Do not test the first item first (or ABP_SKIP_TEST=1).")]),
    ]
    run_sig, _ = build_signature(run_extra)

    def run(**values: Any) -> None:
        spec, result = _create(values, owners)
        _describe_created(result, spec.worker)
        orch = orchestrator()
        job_id = result.job_id
        started: JobView | UnitDetail
        if values["skip_test"] or orch.settings.skip_test:
            started = orch.start(job_id, skip_test=True)
        else:
            err.print(f"Testing job {job_id} on its first item…")
            report = _run_test(orch, job_id)
            assert isinstance(report, UnitDetail)  # not skipping the test (above): start() ran it
            unit_report(report, "test run", console=err, worker=spec.worker)
            ok = report.status == UnitStatus.COMPLETED
            if not values["yes"]:
                if not sys.stdin.isatty():
                    if not ok:
                        _test_failed(report, job_id)
                    err.print(f"Job {job_id} is waiting for approval: abp start {job_id} --approve (or --reject)")
                    print(job_id)
                    if not ok:
                        raise typer.Exit(1)
                    return None
                if not typer.confirm(f"Start the remaining {max(result.units - 1, 0)} unit(s)?", default=ok):
                    orch.reject(job_id)
                    err.print(f"Not started. Job {job_id} is CREATED again: edit it with `abp edit {job_id} "
                              "--prompt ...` and test again with `abp start`.")
                    print(job_id)
                    return None
            elif not ok and not values["force"]:
                _test_failed(report, job_id)
                err.print(f"Not started (--yes stops after a failed test; --force starts anyway). Job {job_id} is "
                          f"TESTING: `abp start {job_id} --approve` starts the rest, `--reject` to edit the prompt.")
                if not values["wait"]:
                    print(job_id)
                raise typer.Exit(1)
            elif not ok:
                err.print(Text("the test unit did not complete; starting anyway (--force)", style="yellow"))
            started = orch.approve(job_id)
        if isinstance(started, StartedJob) and started.cache:
            err.print(plan_line(started.plan))
        from agentic_batch.cli.view_commands import follow_job

        if values["wait"]:
            # stdout carries what was asked: nothing, so `abp run ... --wait && abp results last -f csv > out.csv`
            # writes a clean CSV (the id is in the lines on stderr)
            err.print(f"Job {job_id} started.")
        else:
            print(job_id, flush=True)  # stdout carries only the job id: JOB=$(abp run ... --yes)
        if values["wait"] or sys.stdout.isatty():
            code = follow_job(job_id, live=sys.stdout.isatty(), exit_code=values["wait"], console=err)
            raise typer.Exit(code or 0)
        return None

    run.__signature__ = run_sig  # type: ignore[attr-defined]
    app.command("run", help=RUN_HELP)(run)

    @app.command("start")
    def start(job: JobArg,
              skip_test: Annotated[bool, typer.Option("--skip-test", help="Start without testing the first item "
                                                      "(or set ABP_SKIP_TEST=1).")] = False,
              approve: Annotated[bool, typer.Option("--approve", help="Approve a TESTING job: start the "
                                                    "detached executor.")] = False,
              reject: Annotated[bool, typer.Option("--reject", help="Reject a TESTING job: back to CREATED to "
                                                   "edit the prompt.")] = False,
              executors: Annotated[int, typer.Option("--executors", help="Executor processes on this host; "
                                                     "several help CPU-bound jobs.")] = 1,
              as_json: JsonFlag = False) -> None:
        """Test-first start: on a CREATED job run the first unit now and show it; --approve starts the rest."""
        orch = orchestrator()
        if approve and reject:
            raise InvalidSpec("give --approve or --reject, not both")
        if approve or reject:
            status = orch.approve(job, executors=executors) if approve else orch.reject(job)
            if as_json:
                print_json(status)
            elif approve:
                ex = status.executor
                if isinstance(status, StartedJob) and status.cache:
                    out.print(plan_line(status.plan))
                out.print(f"Job {status.id} approved: executor running (pid {ex.pid}). "
                          f"Follow it with `abp watch {status.id}`.")
            else:
                out.print(f"Job {status.id} rejected: CREATED again. Change the prompt with "
                          f"`abp edit {status.id} --prompt ...`, then `abp start {status.id}`.")
            return
        target = orch.settle_test(orch.job(job))  # a live test run: one line; a lost one: tested anew
        if target.status == JobStatus.TESTING:
            report = orch.test_report(target.id)
            if as_json:
                print_json(report)
            else:
                unit_report(report, "test run (waiting for approval)", worker=target.worker)
                _after_test(report, target.id)
            raise typer.Exit(0 if report.status == UnitStatus.COMPLETED else 1)
        testing = target.status == JobStatus.CREATED and not (skip_test or orch.settings.skip_test)
        if not as_json and testing:
            err.print(f"Testing job {target.id} on its first item…")
        result = _run_test(orch, target.id) if testing else orch.start(job, skip_test=skip_test, executors=executors)
        if as_json:
            print_json(result)
        elif isinstance(result, JobView):
            if isinstance(result, StartedJob) and result.cache:
                out.print(plan_line(result.plan))
            out.print(f"Job {result.id} started without a test: executor pid {result.executor.pid}. "
                      f"Follow it with `abp watch {result.id}`.")
        else:
            unit_report(result, "test run", worker=target.worker)
            _after_test(result, target.id)
        if isinstance(result, UnitDetail) and result.status != UnitStatus.COMPLETED:
            raise typer.Exit(1)

    @app.command("edit")
    def edit(job: JobArg,
             prompt: Annotated[str | None, typer.Option("--prompt", help="New prompt template.")] = None,
             prompt_file: Annotated[str | None, typer.Option("--prompt-file", help="File with the new "
                                                                "template.")] = None,
             as_json: JsonFlag = False) -> None:
        """Replace a job's prompt template (CREATED, TESTING, PAUSED or FAILED jobs)."""
        if (prompt is None) == (prompt_file is None):
            raise InvalidSpec("give exactly one of --prompt or --prompt-file")
        template = prompt if prompt is not None else read_text_file(prompt_file or "", "--prompt-file")
        status = orchestrator().edit_prompt(job, template)
        if as_json:
            print_json(status)
        else:
            out.print(f"Prompt of job {status.id} updated; job is {status.status}.")

    @app.command("sync")
    def sync(job: JobArg, as_json: JsonFlag = False) -> None:
        """Re-read the job's source and add items that are new (known keys are skipped, nothing duplicated)."""
        result = orchestrator().sync(job)
        if as_json:
            print_json(result)
        else:
            out.print(f"{result.added} new unit(s) added; {result.existing} item(s) were already there.")
            if result.next:
                job_id = result.job_id
                command = {"resume": f"abp resume {job_id}", "retry": f"abp retry {job_id}",
                           "start": f"abp start {job_id}", "approve": f"abp start {job_id} --approve"}[result.next]
                out.print(f"Job {job_id} is {result.status}: `{command}` runs them.")
            elif result.added and result.status == JobStatus.RUNNING:
                out.print(f"Job {result.job_id} is RUNNING: its executor picks them up.")


def _run_test(orch: Orchestrator, job_id: int) -> JobView | UnitDetail:
    """The test run in this process; SIGTERM/SIGINT end it with one line (the unit is PENDING again)."""
    from agentic_batch.service.test_run import TestInterrupted

    try:
        return orch.start(job_id)
    except TestInterrupted as exc:
        err.print(f"test run of job {job_id} interrupted by {exc.signame}; nothing was lost: "
                  f"`abp start {job_id}` tests it again")
        raise typer.Exit(143 if exc.signame == "SIGTERM" else 130) from None


def _test_failed(report: UnitView, job_id: int) -> None:
    reason = " ".join(str(report.error or "it did not complete").split())
    err.print(safe(f"The test unit of job {job_id} failed ({report.status}): {reason[:300]}", style="red"))


def _after_test(report: UnitView, job_id: int) -> None:
    """Say whether the test passed; approve/reject hints either way (a failed test exits non-zero)."""
    if report.status != UnitStatus.COMPLETED:
        _test_failed(report, job_id)
        err.print(f"Fix the prompt or worker and test again: [bold]abp start {job_id} --reject[/bold], "
                  f"`abp edit {job_id} --prompt ...`, `abp start {job_id}`   ·   run the rest anyway: "
                  f"[bold]abp start {job_id} --approve[/bold]")
        return
    _approval_hint(job_id)


def _approval_hint(job_id: int) -> None:
    err.print(f"Approve the full run: [bold]abp start {job_id} --approve[/bold]   ·   reject: "
              f"[bold]abp start {job_id} --reject[/bold] (then `abp edit {job_id} --prompt ...`)")
