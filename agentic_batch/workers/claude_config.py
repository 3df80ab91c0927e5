"""A Claude Code config directory of the job's own, so units leave the user's `~/.claude` as it was.

Left alone, every CLI run writes into the user's config dir: its session transcript
(`projects/<cwd slug>/<session>.jsonl`, plus an auto-memory folder there even with
`--no-session-persistence`), `~/.claude.json` bookkeeping and its backups, `sessions/`, the plugin
store. A per-file job would add one `claude --resume` entry per unit, and a unit per worktree one
project folder per unit. So the worker points `CLAUDE_CONFIG_DIR` at `$ABP_HOME/jobs/<job>/claude`:
everything the CLI writes lands there, and a unit's transcript is
`jobs/<job>/claude/projects/<slug of its cwd>/<its session id>.jsonl` (the session id is stored with
the unit; the conversation itself is in the store as events).

What the units keep from the user's configuration:

* **Credentials, from where they are.** `CLAUDE_SECURESTORAGE_CONFIG_DIR` tells the CLI where its
  credential store lives apart from its config dir (empty: `~/.claude`, and the default macOS
  Keychain item). It is set to the user's config dir as the user's own runs see it, so the CLI reads
  `.credentials.json` (or the Keychain) there, and an OAuth refresh writes the rotated token back
  there under the CLI's own lock. Not a copy and not a symlink: refresh tokens are single-use, so a
  refresh through a copy (or through a link the CLI's no-follow write replaces) would leave the
  user's own `claude` holding a revoked token. `ANTHROPIC_API_KEY`, Bedrock/Vertex variables and the
  rest of the environment pass through as before.
* **Settings, copied** (`settings.json`, `.claude.json`), refreshed once per executor, so
  `apiKeyHelper`, `model`, `env`, permissions, hooks, MCP servers and a `.claude.json`-held API key
  apply as in the user's runs. Two kinds of keys are dropped from the settings copy, as the
  claude-agent-sdk does for its own redirected config dirs (`_internal/session_resume.py`):
  `enabledPlugins` / `extraKnownMarketplaces` (they would install each marketplace into the job's
  directory, from the network, in a batch) and `env.CLAUDE_CONFIG_DIR` (it would send the CLI back to
  the user's dir).
* **The user's own instructions and extensions, linked** read-only: `CLAUDE.md`, `agents/`,
  `commands/`, `skills/`, `output-styles/`, `rules/`, `hooks/`.

Nothing is ever written to the user's config dir by this module; the private dir is mode 0700
(`.claude.json` may hold an API key).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

CONFIG_DIR_ENV = "CLAUDE_CONFIG_DIR"
SECURE_STORAGE_ENV = "CLAUDE_SECURESTORAGE_CONFIG_DIR"
#: The user's instructions and extensions: read by the CLI, never written by a run.
LINKED = ("CLAUDE.md", "agents", "commands", "skills", "output-styles", "rules", "hooks")
#: Settings keys that misbehave under a redirected config dir (see the module docstring).
_STRIPPED_SETTINGS = ("enabledPlugins", "extraKnownMarketplaces")


def user_config_dir(environ: Mapping[str, str]) -> Path:
    """The config dir the user's own `claude` uses: `$CLAUDE_CONFIG_DIR`, else `~/.claude`."""
    configured = environ.get(CONFIG_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(environ.get("HOME") or Path.home()) / ".claude"


def user_global_config(environ: Mapping[str, str]) -> Path:
    """The user's `.claude.json`: inside `$CLAUDE_CONFIG_DIR` when set, else `~/.claude.json` (the CLI's
    rule; a legacy `<config dir>/.config.json` wins when present)."""
    legacy = user_config_dir(environ) / ".config.json"
    if legacy.is_file():
        return legacy
    configured = environ.get(CONFIG_DIR_ENV)
    base = Path(configured).expanduser() if configured else Path(environ.get("HOME") or Path.home())
    return base / ".claude.json"


def secure_storage_value(environ: Mapping[str, str]) -> str:
    """What `CLAUDE_SECURESTORAGE_CONFIG_DIR` must be for the CLI to find the user's credentials.

    The user's own value if set; else their `CLAUDE_CONFIG_DIR` verbatim (the CLI names the Keychain
    item after that string); else empty, which means `~/.claude` and the default Keychain item."""
    if SECURE_STORAGE_ENV in environ:
        return environ[SECURE_STORAGE_ENV]
    return environ.get(CONFIG_DIR_ENV) or ""


def strip_settings(content: bytes) -> bytes:
    """User settings without the keys that misbehave in a private config dir; content that is not a
    JSON object passes unchanged (the CLI then reports it as it would for the user)."""
    try:
        parsed = json.loads(content.decode("utf-8-sig"))  # the CLI accepts a BOM (PowerShell writes one)
    except ValueError:
        return content
    if not isinstance(parsed, dict):
        return content
    stripped = [key for key in _STRIPPED_SETTINGS if parsed.pop(key, None) is not None]
    env = parsed.get("env")
    if isinstance(env, dict) and env.pop(CONFIG_DIR_ENV, None) is not None:
        stripped.append("env")
    if not stripped:
        return content
    try:
        return json.dumps(parsed, allow_nan=False).encode()
    except ValueError:
        return content


def _read_regular(path: Path) -> bytes | None:
    """A regular file's bytes; None when missing, not a regular file or unreadable (best effort:
    the CLI then runs without it, as it would with the user's file missing)."""
    try:
        if not path.is_file():
            return None
        return path.read_bytes()
    except OSError:
        return None


def _replace_file(target: Path, content: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.replace(tmp, target)


def _replace_link(target: Path, source: Path) -> None:
    if target.is_symlink():
        if os.readlink(target) == str(source):
            return
    elif target.is_dir():
        return  # a real folder the CLI made there: the job's own, leave it
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.link")
    os.symlink(source, tmp)
    os.replace(tmp, target)


def _drop(target: Path) -> None:
    """Remove what we put at `target` when the user's entry is gone (never a real folder)."""
    if target.is_symlink() or target.is_file():
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


def _copy(source: Path, target: Path, transform: Callable[[bytes], bytes] | None = None) -> None:
    content = _read_regular(source)
    if content is None:
        _drop(target)
    else:
        _replace_file(target, transform(content) if transform else content)


def prepare(private: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Create or refresh the private config dir `private` from the user's configuration in `environ`;
    return the variables that send the CLI there. Safe to run from several executors at once: every
    entry is replaced atomically."""
    private.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        private.chmod(0o700)
    env = {CONFIG_DIR_ENV: str(private), SECURE_STORAGE_ENV: secure_storage_value(environ)}
    user_dir = user_config_dir(environ)
    if os.path.realpath(private) == os.path.realpath(user_dir):
        return env  # the executor was started with this very dir as its config (a manual resume's shell)
    _copy(user_dir / "settings.json", private / "settings.json", strip_settings)
    _copy(user_global_config(environ), private / ".claude.json")
    for name in LINKED:
        source = user_dir / name
        if source.exists():
            _replace_link(private / name, source.absolute())
        else:
            _drop(private / name)
    return env


#: The CLI names a project's folder after its cwd (`project_folder_name`); a name longer than this is
#: cut and given a hash suffix we do not recompute.
_PROJECT_NAME_MAX = 200


def project_folder_name(cwd: str) -> str:
    """The folder the CLI keeps a cwd's sessions in: every character but ASCII letters and digits a
    dash, counted in UTF-16 code units as the CLI (JavaScript) counts them."""
    return "".join(ch if ch.isascii() and ch.isalnum() else "-" * (2 if ord(ch) > 0xFFFF else 1) for ch in cwd)


def transcript_path(private: Path, memory_dir: str | None, session_id: str | None,
                    cwd: str | None = None) -> Path | None:
    """Where the CLI keeps a session's transcript in `private`: the project folder named after its
    `cwd` (both in its init message); else next to the project's auto-memory folder
    (`memory_paths.auto`), which is the same folder only when the CLI keyed its memory on the cwd,
    not on a git repository's root (as it does in a worktree, or a repository's subdirectory).
    None when neither says."""
    if not session_id:
        return None
    if cwd and len(project_folder_name(cwd)) <= _PROJECT_NAME_MAX:
        return private / "projects" / project_folder_name(cwd) / f"{session_id}.jsonl"
    if not memory_dir:
        return None
    project = Path(memory_dir.rstrip("/")).parent
    if os.path.realpath(project.parent) != os.path.realpath(private / "projects"):
        return None
    if cwd and not project.name.startswith(project_folder_name(cwd)[:_PROJECT_NAME_MAX]):
        return None  # the memory of a repository's root, not this cwd's folder
    return project / f"{session_id}.jsonl"
