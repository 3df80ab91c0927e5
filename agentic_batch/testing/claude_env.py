"""Running the real Claude Code CLI offline against the scripted server: environment and helpers.

Shared by the worker's integration tests, the engine's end-to-end tests and benchmarks. No pytest
import: a test wraps these in its own fixtures (see tests/integration/test_claude_worker.py), and an
end-to-end test that starts `abp` in a subprocess merges `isolated_environ(...)` into its env.

What the CLI needs offline (found by logging a real run; see docs/claude-cli-offline.md):
`ANTHROPIC_BASE_URL` (the server), any `ANTHROPIC_API_KEY`, a private `HOME` (it writes
`~/.claude.json` and `~/.claude/projects/...` session files). The rest keeps it quiet and fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentic_batch.engine.procs import process_alive
from agentic_batch.testing.anthropic_server import Responder, ScriptedAnthropicServer, echo_responder

#: Variables that would send the CLI somewhere other than the scripted server (or change its auth).
CONFLICTING_ENV = (
    "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY", "CLAUDE_CONFIG_DIR", "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL", "CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "HTTPS_PROXY", "HTTP_PROXY",
    "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy",
)


def claude_test_env(server_url: str, home: str | os.PathLike[str]) -> dict[str, str]:
    """Variables that point the real CLI at `server_url` with a private `home`."""
    return {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": server_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-dummy",
        # No telemetry, error reporting, update checks or other calls to hosts we do not serve.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # The engine owns retries; without this the CLI retries a 5xx up to 10 times with backoff.
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def isolated_environ(server_url: str, home: str | os.PathLike[str],
                     base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A whole environment for a subprocess (e.g. `abp executor`): `base` minus conflicts, plus ours."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in CONFLICTING_ENV}
    env.update(claude_test_env(server_url, home))
    return env


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str], remove: tuple[str, ...] = CONFLICTING_ENV) -> Iterator[None]:
    """Set `values` (and drop `remove`) in os.environ for the block: the SDK passes os.environ on."""
    saved = dict(os.environ)
    try:
        for key in remove:
            os.environ.pop(key, None)
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sdk_skip_reason() -> str | None:
    """Why tests that need the bundled CLI cannot run here, or None when they can."""
    from agentic_batch.workers.claude_process import bundled_cli

    try:
        import claude_agent_sdk  # noqa: F401
    except ImportError:
        return "claude-agent-sdk is not installed (pip install 'agentic-batch[claude]')"
    if bundled_cli() is None and shutil.which("claude") is None:
        return "claude-agent-sdk has no bundled CLI for this platform and `claude` is not on PATH"
    return None


@dataclass
class ClaudeOffline:
    """A running scripted server plus the private HOME and env the CLI should use with it."""

    server: ScriptedAnthropicServer
    home: Path
    env: dict[str, str]


@contextlib.contextmanager
def claude_offline(responder: Responder = echo_responder, *, home: Path | None = None,
                   patch_environ: bool = True, latency: float = 0.0) -> Iterator[ClaudeOffline]:
    """Start a scripted server, make a private HOME, and (by default) patch os.environ for both."""
    made_home = home is None
    home = home or Path(tempfile.mkdtemp(prefix="abp-claude-home-"))
    server = ScriptedAnthropicServer(responder, latency=latency).start()
    env = claude_test_env(server.url, home)
    try:
        if patch_environ:
            with patched_environ(env):
                yield ClaudeOffline(server, home, env)
        else:
            yield ClaudeOffline(server, home, env)
    finally:
        server.stop()
        if made_home:
            shutil.rmtree(home, ignore_errors=True)


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in group `pgid`, from /proc (Linux): to assert nothing leaked."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    return process_alive(pid)
