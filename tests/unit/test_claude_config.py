"""The job's private Claude Code config dir: what it takes from the user's, and that it never writes there."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agentic_batch.workers import claude_config
from agentic_batch.workers.claude_config import CONFIG_DIR_ENV, SECURE_STORAGE_ENV, prepare, strip_settings


def user_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    config = home / ".claude"
    (config / "agents").mkdir(parents=True)
    (config / "agents" / "reviewer.md").write_text("---\nname: reviewer\n---\n")
    (config / "projects" / "-repo").mkdir(parents=True)
    (config / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "secret"}}')
    (config / "settings.json").write_text(json.dumps({
        "model": "claude-haiku-4-5", "apiKeyHelper": "/bin/echo key",
        "enabledPlugins": {"lint@market": True}, "extraKnownMarketplaces": {"market": {}},
        "env": {"CLAUDE_CONFIG_DIR": "/elsewhere", "FOO": "1"}}))
    (config / "CLAUDE.md").write_text("be brief\n")
    (home / ".claude.json").write_text('{"mcpServers": {"db": {"command": "db-mcp"}}}')
    return home


def snapshot(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = "dir" if path.is_dir() else path.read_bytes()
    return out


def test_private_dir_takes_settings_and_instructions_but_not_credentials_or_history(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    before = snapshot(home)
    private = tmp_path / "abp" / "jobs" / "7" / "claude"

    env = prepare(private, {"HOME": str(home)})

    assert env == {CONFIG_DIR_ENV: str(private), SECURE_STORAGE_ENV: ""}  # "": credentials stay in ~/.claude
    assert snapshot(home) == before
    assert private.stat().st_mode & 0o777 == 0o700
    settings = json.loads((private / "settings.json").read_text())
    assert settings == {"model": "claude-haiku-4-5", "apiKeyHelper": "/bin/echo key", "env": {"FOO": "1"}}
    assert (private / "settings.json").stat().st_mode & 0o777 == 0o600
    assert (private / ".claude.json").read_text() == (home / ".claude.json").read_text()
    assert os.readlink(private / "CLAUDE.md") == str(home / ".claude" / "CLAUDE.md")
    assert (private / "agents" / "reviewer.md").is_file()
    assert not (private / ".credentials.json").exists() and not (private / "projects").exists()
    assert not (private / "commands").exists()  # the user has none: no dangling link


def test_refresh_follows_the_users_changes(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    private = tmp_path / "private"
    prepare(private, {"HOME": str(home)})
    (private / "projects" / "-job-cwd").mkdir(parents=True)  # what the CLI wrote meanwhile stays
    (home / ".claude" / "CLAUDE.md").unlink()
    (home / ".claude" / "settings.json").write_text('{"model": "claude-opus-4-1"}')
    (home / ".claude" / "commands").mkdir()

    prepare(private, {"HOME": str(home)})

    assert not (private / "CLAUDE.md").is_symlink() and not (private / "CLAUDE.md").exists()
    assert (private / "settings.json").read_text() == '{"model": "claude-opus-4-1"}'  # nothing to strip: as is
    assert (private / "commands").is_symlink()
    assert (private / "projects" / "-job-cwd").is_dir()


def test_a_user_config_dir_is_followed_and_names_the_credential_store(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    custom = tmp_path / "custom-config"
    custom.mkdir()
    (custom / "settings.json").write_text('{"model": "m"}')
    (custom / ".claude.json").write_text('{"userID": "u"}')
    private = tmp_path / "private"

    env = prepare(private, {"HOME": str(home), CONFIG_DIR_ENV: str(custom)})

    assert env[SECURE_STORAGE_ENV] == str(custom)  # the CLI names the Keychain item after this string
    assert (private / "settings.json").read_text() == '{"model": "m"}'
    assert (private / ".claude.json").read_text() == '{"userID": "u"}'
    assert not (private / "CLAUDE.md").exists()
    explicit = prepare(private, {"HOME": str(home), CONFIG_DIR_ENV: str(custom), SECURE_STORAGE_ENV: "/vault"})
    assert explicit[SECURE_STORAGE_ENV] == "/vault"


def test_the_users_own_dir_is_never_rewritten(tmp_path: Path) -> None:
    """An executor started from a shell whose CLAUDE_CONFIG_DIR is already the job's dir (a manual
    `claude --resume` there) uses it as it is."""
    home = user_home(tmp_path)
    private = tmp_path / "private"
    prepare(private, {"HOME": str(home)})
    before = snapshot(private)
    env = prepare(private, {"HOME": str(home), CONFIG_DIR_ENV: str(private)})
    assert env[CONFIG_DIR_ENV] == str(private) and snapshot(private) == before


def test_settings_that_are_not_an_object_pass_unchanged() -> None:
    assert strip_settings(b"{not json") == b"{not json"
    assert strip_settings(b"[1]") == b"[1]"
    assert json.loads(strip_settings('\ufeff{"enabledPlugins": {}, "a": 1}'.encode())) == {"a": 1}


def test_transcript_path_is_next_to_the_memory_folder_the_cli_names(tmp_path: Path) -> None:
    private = tmp_path / "private"
    memory = f"{private}/projects/-work-part01/memory/"
    assert claude_config.transcript_path(private, memory, "abc") == private / "projects" / "-work-part01" / "abc.jsonl"
    assert claude_config.transcript_path(private, "/home/u/.claude/projects/x/memory/", "abc") is None
    assert claude_config.transcript_path(private, None, "abc") is None


def test_transcript_path_follows_the_cwd_where_memory_is_keyed_on_the_repository(tmp_path: Path) -> None:
    """In a worktree (or a repository's subdirectory) the CLI keys memory on the repository's root
    but keeps the transcript in the folder named after its cwd."""
    private = tmp_path / "private"
    memory = str(private / "projects" / "-repo" / "memory") + "/"
    cwd = "/home/u/.agentic-batch/jobs/3/worktrees/ex-1/w2/part_01"
    assert claude_config.transcript_path(private, memory, "abc", cwd) == (
        private / "projects" / "-home-u--agentic-batch-jobs-3-worktrees-ex-1-w2-part-01" / "abc.jsonl")
    assert claude_config.project_folder_name("/a/é\U0001F600b") == "-a----b"
    long_cwd = "/" + "d" * 300
    assert claude_config.transcript_path(private, memory, "abc", long_cwd) is None  # hash-suffixed: not guessed
    long_memory = str(private / "projects" / (long_cwd.replace("/", "-")[:200] + "-k3f") / "memory")
    assert claude_config.transcript_path(private, long_memory, "abc", long_cwd) == (
        Path(long_memory).parent / "abc.jsonl")
