"""Diagnostic: what the claude-agent-sdk path itself costs, without abp. Wall time and the CLIs' CPU.

N units (default 40) at concurrency C (default 4), each one run of the Claude Code CLI bundled in
claude-agent-sdk against the scripted Anthropic server (`--scenario write-file`), driven by a bare
asyncio loop in this process, in one of these ways:

  * p         `claude -p PROMPT --output-format stream-json --verbose --permission-mode acceptEdits`,
              each CLI in a session of its own (what `parallel` + `setsid` does);
  * p-shared  the same, all CLIs in this process's session and group (what plain `parallel` does);
  * stream    the SDK's wire protocol written by hand: `--input-format stream-json`, an `initialize`
              control request, the user message, stdin closed; own session;
  * sdk       `claude_agent_sdk.query()` with abp's launcher as `cli_path` (own session, pid file);
  * sdk-plain `query()` with the real CLI as `cli_path`: the SDK's own spawn, no new session.

Arms rotate each round; medians are printed. Used to split abp's cost in bench/claude_vs_parallel.py
into "the SDK" and "abp" (docs/benchmarks.md).

    python bench/claude_sdk_variants.py --rounds 3 --modes p stream sdk
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _agents as a
import _common as c

from agentic_batch.testing.claude_env import isolated_environ
from agentic_batch.workers import claude_launcher
from agentic_batch.workers.claude_process import bundled_cli, ensure_wrapper

MODES = ("p", "p-shared", "stream", "sdk", "sdk-plain")
FLAGS = ["--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"]


def make_tree(root: Path, units: int) -> list[Path]:
    dirs = []
    for i in range(units):
        folder = root / f"u{i:03d}"
        folder.mkdir(parents=True)
        (folder / "doc.md").write_text(f"# Document {i}\n")
        dirs.append(folder)
    return dirs


async def one_cli(mode: str, folder: Path, cli: Path, wrapper: Path) -> None:
    prompt = f"Summarise the file. FILE={folder}/doc.md"
    if mode.startswith("sdk"):
        from claude_agent_sdk import ClaudeAgentOptions, query

        env = {}
        if mode == "sdk":
            env = {claude_launcher.REAL_CLI_ENV: str(cli), claude_launcher.PID_FILE_ENV: str(folder / "cli.pid"),
                   claude_launcher.PARENT_PID_ENV: str(os.getpid())}
        options = ClaudeAgentOptions(cwd=str(folder), permission_mode="acceptEdits", env=env,
                                     system_prompt={"type": "preset", "preset": "claude_code"},
                                     cli_path=str(wrapper if mode == "sdk" else cli), stderr=lambda _line: None)
        async for _ in query(prompt=prompt, options=options):
            pass
        return
    stream = mode == "stream"
    args = [*FLAGS, "--input-format", "stream-json"] if stream else ["-p", prompt, *FLAGS]
    proc = await asyncio.create_subprocess_exec(
        str(cli), *args, cwd=folder, stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if stream else asyncio.subprocess.DEVNULL,
        start_new_session=mode != "p-shared")
    assert proc.stdout is not None
    if stream:
        assert proc.stdin is not None
        init = {"type": "control_request", "request_id": "req_1", "request": {"subtype": "initialize", "hooks": None}}
        proc.stdin.write(json.dumps(init).encode() + b"\n")
        async for line in proc.stdout:
            if json.loads(line).get("type") == "control_response":
                break
        user = {"type": "user", "session_id": "", "message": {"role": "user", "content": prompt},
                "parent_tool_use_id": None}
        proc.stdin.write(json.dumps(user).encode() + b"\n")
        await proc.stdin.drain()
        proc.stdin.close()
    async for line in proc.stdout:
        json.loads(line)
    await proc.wait()


async def run_all(mode: str, dirs: list[Path], concurrency: int, cli: Path, wrapper: Path) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def guarded(folder: Path) -> None:
        async with slots:
            await one_cli(mode, folder, cli, wrapper)

    await asyncio.gather(*(guarded(folder) for folder in dirs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=["p", "p-shared", "stream", "sdk"])
    args = ap.parse_args()
    cli = bundled_cli()
    if cli is None:
        raise SystemExit("needs claude-agent-sdk with its bundled CLI")
    print(f"# claude SDK variants: {args.units} units, concurrency {args.concurrency}, {args.rounds} rounds")
    print(f"# {c.machine()}")
    times: dict[str, list[float]] = {mode: [] for mode in args.modes}
    with c.temp_home() as tmp, a.server("anthropic_server", "--scenario", "write-file") as srv:
        home = tmp / "claude-home"
        home.mkdir()
        os.environ.update(isolated_environ(srv.url, home))
        import claude_agent_sdk  # noqa: F401  (not inside any timing)

        wrapper = ensure_wrapper(tmp / "run")
        for rnd in range(args.rounds):
            shift = rnd % len(args.modes)
            for mode in args.modes[shift:] + args.modes[:shift]:
                dirs = make_tree(tmp / f"r{rnd}-{mode}", args.units)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.time()
                asyncio.run(run_all(mode, dirs, args.concurrency, cli, wrapper))
                seconds = time.time() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                missing = sum(1 for folder in dirs if not (folder / "result.txt").is_file())
                if missing:
                    raise SystemExit(f"{mode}: result.txt missing in {missing} directories")
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                times[mode].append(seconds)
                print(f"round {rnd + 1} {mode:10s} {seconds:6.2f} s  CLIs' CPU {cpu:5.1f} s", flush=True)
    for mode, values in times.items():
        print(f"median {mode:10s} {a.median(values):6.2f} s  ({args.units / a.median(values):.2f} units/s)")


if __name__ == "__main__":
    main()
