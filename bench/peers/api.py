"""API workers side by side: N model calls at fixed latency through abp and through its peers, alternated.

Every arm talks to the same kind of scripted server (`agentic_batch.testing.openai_server` or
`anthropic_server`, `--latency L --scenario echo`), a fresh subprocess per arm and round, so the
server's CPU is measured per arm and it never shares a GIL with a client. Every arm sends the same
request abp's workers send (system prompt with the working directory, the user prompt, the four
built-in tool definitions) and checks every answer.

OpenAI-compatible server:
  * aiohttp      a raw aiohttp loop, json.loads of each answer (the floor; aiohttp in its own venv)
  * openai-sdk   a bare `AsyncOpenAI` loop, the project's openai SDK
  * curator      Bespoke Labs Curator's `LLM` (openai backend, base_url at the server, cache off), in its
                 own venv; offline: litellm's bundled cost map and tokenizers (see `curator_env`)
  * abp-openai   `abp create --worker openai` (not timed), `abp start JOB --skip-test` timed until the
                 job is COMPLETED: the real detached executor, every event, result and cost stored
Anthropic server:
  * aiohttp-anthropic, anthropic-sdk (a bare `AsyncAnthropic` loop), abp-anthropic (as abp-openai)

Two times per run. **wall**: what a user waits for, process start to the end (peers: spawn to exit;
abp: invoking `abp start` to the job's finished_at). **work**: the requests only (peers: the timed
loop, built client to last answer, for Curator the `llm(dataset)` call; abp: the executor's span, first
unit claimed to last unit finished). CPU: the whole client process (getrusage of the child), for abp
the executor (from /proc) plus the `abp create`/`abp start` CLI processes; CPU of the work: the
client's `process_time` over the timed part, for abp the executor's whole CPU (its start-up, ~1.4 s
at load ~12, included).

    python bench/peers/api.py                                   # 2,000 calls, 0.2 s, concurrency 100, 3 rounds
    python bench/peers/api.py --arms aiohttp openai-sdk abp-openai --rounds 5
    python bench/peers/api.py --units 4000 --latency 0.5 --concurrency 200
    python bench/peers/api.py --arms abp-openai --rounds 1 --py-spy /tmp/spy.raw   # where the executor's time goes
    git worktree add --detach /tmp/abp-before <commit>    # before/after: the abp arms of an older tree too
    python bench/peers/api.py --before /tmp/abp-before --arms aiohttp curator abp-openai \
        aiohttp-anthropic abp-anthropic

An arm whose venv cannot be installed (no index, a resolver conflict) prints one line and is skipped;
the others still run. Peer venvs live under /tmp/abp-peers (bench/peers/_venvs.py pins them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import _agents as a  # noqa: E402
import _common as c  # noqa: E402
import _venvs  # noqa: E402

CLIENT = HERE / "api_client.py"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
#: arm -> (server, peer venv or None for the project's interpreter, api_client mode or None for abp)
ARMS: dict[str, tuple[str, str | None, str | None]] = {
    "aiohttp": ("openai", "aiohttp", "aiohttp-openai"),
    "openai-sdk": ("openai", None, "openai-sdk"),
    "curator": ("openai", "curator", "curator"),
    "abp-openai": ("openai", None, None),
    "aiohttp-anthropic": ("anthropic", "aiohttp", "aiohttp-anthropic"),
    "anthropic-sdk": ("anthropic", None, "anthropic-sdk"),
    "abp-anthropic": ("anthropic", None, None),
}
#: The suffix of an abp arm run from the --before tree.
BEFORE = "@before"
#: arm -> (its floor, the peers it is compared with): the ratios printed.
RATIOS: dict[str, tuple[str, list[str]]] = {
    "abp-openai": ("aiohttp", ["curator", "openai-sdk"]), "curator": ("aiohttp", ["openai-sdk"]),
    "openai-sdk": ("aiohttp", []), "abp-anthropic": ("aiohttp-anthropic", ["anthropic-sdk"]),
    "anthropic-sdk": ("aiohttp-anthropic", []),
}


def request_body(tmp: Path) -> dict:
    """What abp's openai/anthropic workers send for one unit, less the user prompt (api_client adds it)."""
    from agentic_batch.workers.anthropic_messages import AnthropicOptions
    from agentic_batch.workers.tool_loop import system_prompt
    from agentic_batch.workers.tools import Toolbox, builtin_tools

    ctx = SimpleNamespace(workspace=tmp, allowed_dirs=[tmp])
    toolbox = Toolbox(builtin_tools(ctx))  # type: ignore[arg-type]
    return {"system": system_prompt(ctx, None),  # type: ignore[arg-type]
            "tools_openai": toolbox.openai_tools(), "tools_anthropic": toolbox.anthropic_tools(),
            "max_tokens": AnthropicOptions(model=MODELS["anthropic"]).max_tokens}


def curator_env(python: Path) -> dict[str, str]:
    """Curator with no internet: litellm's bundled model cost map, tiktoken's BPE files from the copies
    litellm ships (TIKTOKEN_CACHE_DIR), no Curator cache (every run makes the requests), no viewer or
    telemetry, and its working files in a throwaway folder."""
    site = subprocess.run([str(python), "-c", "import litellm, os; print(os.path.dirname(litellm.__file__))"],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}).stdout.strip().splitlines()[-1]
    return {"LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "TIKTOKEN_CACHE_DIR": str(Path(site) / "litellm_core_utils" / "tokenizers"),
            "CURATOR_DISABLE_CACHE": "true", "CURATOR_VIEWER": "0", "TELEMETRY_ENABLED": "false",
            "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1", "OPENAI_API_KEY": "sk-dummy-bench"}


def client_arm(python: Path, mode: str, url: str, args: argparse.Namespace, body_path: Path,
               env: dict[str, str], workdir: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([str(python), str(CLIENT), mode, url, str(args.units), str(args.concurrency),
                           str(body_path)], capture_output=True, text=True, env={**os.environ, **env},
                          cwd=workdir, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{mode} exited {proc.returncode}:\n{tail}")
    out = json.loads(lines[-1])
    if out["answers"] != args.units:
        raise RuntimeError(f"{mode}: {out['answers']} of {args.units} answers checked out")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "work": out["seconds"], "cpu": cpu, "work_cpu": out["cpu_s"], "detail": ""}


def abp_arm(worker: str, url: str, args: argparse.Namespace, tmp: Path, py_spy: Path | None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = a.run_openai_job(url, tmp, f"peers-{worker}", args.units, args.concurrency, "--max-retries", "3",
                           model=MODELS[worker], worker=worker, py_spy=py_spy)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res["status"] != "COMPLETED" or res["counts"].get("COMPLETED") != args.units:
        raise RuntimeError(f"abp {worker} job ended {res['status']} with {res['counts']}")
    cli = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": res["finished"] - res["t0"], "work": res["last_finish"] - res["first_start"],
            "cpu": res["executor_cpu_s"] + cli, "work_cpu": res["executor_cpu_s"],
            "detail": f"executor CPU {res['executor_cpu_s']:.1f} s + CLI{' and py-spy' if py_spy else ''} {cli:.1f} s, "
                      f"first unit claimed {res['first_start'] - res['t0']:.2f} s after `abp start`"}


def one_run(arm: str, python: Path, env: dict[str, str], args: argparse.Namespace, spy: Path | None) -> dict:
    """One arm once, against a fresh server (so its CPU is this arm's) in a throwaway ABP_HOME.
    An `abp-...@before` arm runs abp's CLI and executor from the --before tree (PYTHONPATH)."""
    arm, before = arm.removesuffix(BEFORE), arm.endswith(BEFORE)
    kind, _, mode = ARMS[arm]
    server = {"openai": "openai_server", "anthropic": "anthropic_server"}[kind]
    with c.temp_home() as tmp, a.server(server, "--latency", str(args.latency), "--scenario", "echo") as srv:
        body = request_body(tmp)
        body["model"] = MODELS[kind]
        body_path = tmp / "body.json"
        body_path.write_text(json.dumps(body))
        try:
            if mode is None:
                saved = os.environ.get("PYTHONPATH")
                if before:
                    os.environ["PYTHONPATH"] = str(args.before)
                try:
                    r = abp_arm(kind, srv.url, args, tmp, spy)
                finally:
                    if saved is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = saved
            else:
                r = client_arm(python, mode, srv.url, args, body_path, env, tmp)
        finally:
            srv.stop()
        r["server_cpu"] = srv.cpu_s
        requests = srv.counts().get("requests")  # the OpenAI server counts them; Curator adds one probe
        if requests is not None and requests < args.units:
            raise RuntimeError(f"the server answered {requests} requests, fewer than {args.units} units")
        if requests is not None:
            r["detail"] = f"{requests} requests; {r['detail']}".rstrip("; ")
    return r


def prepare(arms: list[str]) -> dict[str, tuple[Path, dict[str, str]]]:
    """Each arm's interpreter and extra environment, installing peer venvs first (before any clock
    runs); an arm whose venv cannot be made is dropped with one line."""
    ready: dict[str, tuple[Path, dict[str, str]]] = {}
    for arm in arms:
        venv = ARMS[arm.removesuffix(BEFORE)][1]
        if venv is None:
            ready[arm] = (Path(sys.executable), {})
            continue
        try:
            python = _venvs.peer_python(venv)
            ready[arm] = (python, curator_env(python) if venv == "curator" else {})
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"skipping arm {arm}: could not install {' '.join(_venvs.PEERS[venv])} into "
                  f"{_venvs.ROOT / venv} ({exc})", flush=True)
    return ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.2, help="server seconds per reply")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--before", type=Path, metavar="TREE",
                    help="also run each abp arm from this older checkout (arm@before), for before/after figures")
    ap.add_argument("--py-spy", type=Path, metavar="RAW",
                    help="sample abp's executor with py-spy into RAW (the last round of the first abp arm in "
                         "--arms) and summarise it")
    args = ap.parse_args()
    if args.units < 1 or args.concurrency < 1 or args.latency < 0 or args.rounds < 1:
        raise SystemExit("--units, --concurrency and --rounds must be at least 1, --latency not negative")
    ideal = args.units * args.latency / args.concurrency
    print(f"# {args.units:,} calls, latency {args.latency:g} s, concurrency {args.concurrency} (ideal "
          f"{ideal:.2f} s); {c.machine()}, {datetime.datetime.now():%Y-%m-%d %H:%M}", flush=True)
    wanted = list(args.arms)
    if args.before:
        wanted += [arm + BEFORE for arm in args.arms if ARMS[arm][2] is None]
    ready = prepare(wanted)
    arms = [arm for arm in wanted if arm in ready]
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    loads: list[float] = []
    spied = next((arm for arm in arms if ARMS[arm.removesuffix(BEFORE)][2] is None), None) if args.py_spy else None
    for round_no in range(args.rounds):
        order = arms[round_no % len(arms):] + arms[:round_no % len(arms)]
        for arm in order:
            loads.append(os.getloadavg()[0])
            spy = args.py_spy if (arm == spied and round_no == args.rounds - 1) else None
            try:
                r = one_run(arm, *ready[arm], args, spy)
            except RuntimeError as exc:
                print(f"round {round_no + 1} {arm}: FAILED: {exc}", flush=True)
                continue
            results[arm].append(r)
            busy = r["server_cpu"] / r["wall"] if r["wall"] else 0.0
            print(f"round {round_no + 1} {arm:<18} wall {r['wall']:6.2f} s  work {r['work']:6.2f} s  "
                  f"CPU {r['cpu']:5.1f} s (work {r['work_cpu']:4.1f} s)  "
                  f"server CPU {r['server_cpu']:4.1f} s ({busy:.0%} of a core)"
                  f"{'  ' + r['detail'] if r['detail'] else ''}", flush=True)
    report(args, ideal, results, loads)
    if args.py_spy and args.py_spy.exists():
        a.spy_breakdown(args.py_spy, ("openai/", "anthropic/", "httpx", "httpcore", "anyio/", "h11/"))


def report(args: argparse.Namespace, ideal: float, results: dict[str, list[dict]], loads: list[float]) -> None:
    done = {arm: rs for arm, rs in results.items() if rs}
    if not done:
        return
    print(f"\n{datetime.datetime.now():%Y-%m-%d %H:%M}, {c.machine()}, {args.units:,} calls x {args.latency:g} s "
          f"at concurrency {args.concurrency} (ideal {ideal:.2f} s), {args.rounds} rounds, load average "
          f"{min(loads):.1f}-{max(loads):.1f}")
    med = {arm: {k: statistics.median(r[k] for r in rs) for k in ("wall", "work", "cpu", "work_cpu", "server_cpu")}
           for arm, rs in done.items()}
    print("| arm | median wall s (x ideal) | median work s (x ideal) | CPU s: process (work) | ms CPU per call "
          "(work) | server CPU s | rounds (wall) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for arm, m in med.items():
        print(f"| {arm} | {m['wall']:.2f} ({m['wall'] / ideal:.2f}x) | {m['work']:.2f} ({m['work'] / ideal:.2f}x) "
              f"| {m['cpu']:.1f} ({m['work_cpu']:.1f}) | {1000 * m['work_cpu'] / args.units:.2f} "
              f"| {m['server_cpu']:.1f} | "
              f"{' / '.join(format(r['wall'], '.2f') for r in done[arm])} |")

    def ratio(arm: str, other: str) -> str:
        m, o = med[arm], med[other]
        return (f"{m['wall'] / o['wall']:.2f}x {other} (wall), {m['work'] / o['work']:.2f}x (work), "
                f"{m['work_cpu'] / o['work_cpu']:.1f}x (CPU of the work)")

    for arm, (floor, peers) in RATIOS.items():
        for name in (arm, arm + BEFORE):
            if name in med and floor in med:
                print(f"{name}: " + "; ".join(ratio(name, other) for other in [floor, *peers] if other in med))
        if arm in med and arm + BEFORE in med:
            print(f"{arm}: " + ratio(arm, arm + BEFORE))
    hot = [arm for arm, m in med.items() if m["server_cpu"] > 0.8 * m["work"]]
    if hot:
        print(f"warning: the server used >80% of a core during {', '.join(hot)}: it may be the bottleneck there")


if __name__ == "__main__":
    main()
