"""The user's Claude Code stays clean: a job of the real CLI (bundled in claude-agent-sdk, against the
scripted model server) leaves `~/.claude` and `~/.claude.json` byte for byte as they were, keeps each
unit's session transcript under the job's directory, and still runs on the user's credentials (an
OAuth login in `~/.claude/.credentials.json`, no API key), settings (`model`) and `CLAUDE.md`; in place
and with `--isolate worktree` (where every unit's CLI runs in a worktree, a new project directory each)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from agentic_batch.config import load_settings
from agentic_batch.spec import JobSpec
from agentic_batch.testing.anthropic_replies import Reply
from agentic_batch.testing.anthropic_scripts import MessagesRequest
from agentic_batch.workers.claude_process import resolve_cli
from tests.fixtures.abp import wait_status
from tests.fixtures.claude_env import needs_claude_cli, offline_claude  # noqa: F401  (fixture)

pytestmark = needs_claude_cli

UNITS = 20
OAUTH_TOKEN = "sk-ant-oat01-abp-test-login"
MARKER = "ABP-USER-MEMORY-7341"
SETTINGS_MODEL = "claude-haiku-4-5"


def tree_state(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under `root`: kind and content digest (link target for links), by relative path."""
    state: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir", "")
            else:
                state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def user_claude_config(home: Path) -> None:
    """A user who logged in with `claude login`, chose a model, wrote a CLAUDE.md and has history."""
    config = home / ".claude"
    (config / "projects" / "-home-user-their-repo").mkdir(parents=True)
    (config / "projects" / "-home-user-their-repo" / "3f1c-old-session.jsonl").write_text('{"type":"user"}\n')
    credentials = {"claudeAiOauth": {"accessToken": OAUTH_TOKEN, "refreshToken": "sk-ant-ort01-abp-test",
                                     "expiresAt": 4102444800000, "scopes": ["user:inference", "user:profile"],
                                     "subscriptionType": "max"}}
    (config / ".credentials.json").write_text(json.dumps(credentials))
    (config / ".credentials.json").chmod(0o600)
    (config / "settings.json").write_text(json.dumps({"model": SETTINGS_MODEL}))
    (config / "CLAUDE.md").write_text(f"Sign every answer with {MARKER}.\n")
    (home / ".claude.json").write_text(json.dumps({"numStartups": 41, "userID": "0" * 64,
                                                   "hasCompletedOnboarding": True}))


@pytest.mark.parametrize("isolate", ["none", "worktree"])
def test_a_job_leaves_the_users_claude_config_as_it_was(orch, workdir: Path, offline_claude,  # noqa: F811
                                                        monkeypatch, isolate: str) -> None:
    lock = threading.Lock()
    seen: list[tuple[str, str, str, bool]] = []
    requests: list[MessagesRequest] = []

    def respond(req: MessagesRequest) -> Reply:
        with lock:
            seen.append((req.model, req.headers.get("authorization", ""), req.headers.get("x-api-key", ""),
                         MARKER in json.dumps(req.body)))
            requests.append(req)
        return Reply.text("done")

    offline = offline_claude(respond)
    monkeypatch.delenv("ANTHROPIC_API_KEY")  # the login in ~/.claude is the only credential
    user_claude_config(offline.home)
    before = tree_state(offline.home)

    for i in range(UNITS):  # one folder per file: each unit's CLI runs in a directory of its own
        (workdir / f"part{i:02d}").mkdir()
        (workdir / f"part{i:02d}" / "notes.md").write_text(f"notes {i}\n")
    if isolate == "worktree":
        for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                     ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base"]):
            subprocess.run(["git", "-C", str(workdir), *args], check=True, capture_output=True)
    spec = JobSpec(name="clean-home", source={"kind": "files", "glob": "*/notes.md", "root": str(workdir)},
                   prompt="Read {{ path }}", worker="claude", worker_options={"max_turns": 2},
                   concurrency=4, rpm=100_000,  # a limit puts the rate gateway in the CLI's path
                   isolate=isolate)
    job = orch.create(spec, cwd=workdir).job_id
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    assert final.status == "COMPLETED" and final.completed == UNITS, final

    assert tree_state(offline.home) == before, "the job changed the user's ~/.claude or ~/.claude.json"

    # the user's login, model setting and CLAUDE.md were used for every model call
    assert len(seen) == UNITS
    assert {s[0] for s in seen} == {SETTINGS_MODEL}
    assert {s[1] for s in seen} == {f"Bearer {OAUTH_TOKEN}"} and {s[2] for s in seen} == {""}
    assert all(s[3] for s in seen)

    # each unit's transcript is kept under the job's directory, where its init event says
    projects = load_settings().job_dir(job) / "claude" / "projects"
    folders = set()
    for row in orch.results(job):
        unit = orch.unit(job, row["unit"])
        init = next(e.data for e in unit.events if e.kind == "system" and e.data.get("subtype") == "init")
        transcript = Path(init["transcript"])
        assert transcript.parent.parent == projects and transcript.name == f"{unit.session_id}.jsonl"
        assert transcript.is_file() and unit.payload["relative_path"] in transcript.read_text()  # the prompt
        if isolate == "worktree":
            assert "/worktrees/" in init["cwd"] and not init["cwd"].startswith(str(workdir))
        folders.add(transcript.parent)
    assert len(folders) == UNITS
    if isolate == "worktree":  # its worktrees are gone; the sessions are the job's, not the user's
        assert subprocess.run(["git", "-C", str(workdir), "worktree", "list"], capture_output=True, text=True,
                              check=True).stdout.count("\n") == 1
        return

    # the documented way to continue a unit's session by hand (docs/claude-cli-offline.md) works
    cli = resolve_cli(None)
    assert cli is not None
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(projects.parent), "CLAUDE_SECURESTORAGE_CONFIG_DIR": ""}
    resumed = subprocess.run([str(cli), "-p", "and then?", "--resume", str(unit.session_id)], cwd=init["cwd"],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    assert resumed.returncode == 0, resumed.stderr
    history = json.dumps(requests[-1].messages)
    assert unit.key in history and "and then?" in history  # the unit's conversation, then the new turn
    assert tree_state(offline.home) == before
