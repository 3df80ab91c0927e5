"""Running `abp resume --all` at boot: the systemd user unit (and the crontab line) that does it.

Why these settings in the unit:
- `Type=oneshot` + `RemainAfterExit=yes` + `KillMode=process`: `resume --all` exits once the executors
  are started, and those executors live in the unit's cgroup. systemd's default (`control-group`)
  would kill every process of the cgroup when the unit stops; with `process` only the main process
  (gone already) is, so the executors keep running, as they do when started from a terminal.
- The store and home are the ones of whoever installs the unit (`ABP_HOME`, `ABP_DB_URL`), written
  in the unit, so the boot-time resume finds the same jobs. Whatever else the agents need (API keys,
  PATH) goes in `$ABP_HOME/service.env`, read if present, never written by us.
- A user unit runs at boot only with lingering on (`loginctl enable-linger`); otherwise at login.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from agentic_batch.config import Settings
from agentic_batch.errors import AbpError, InvalidSpec
from agentic_batch.service.models import BootUnit

UNIT_NAME = "abp-resume.service"


def unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "systemd" / "user"


def resume_argv() -> list[str]:
    return [sys.executable, "-m", "agentic_batch", "resume", "--all"]


def _env_line(name: str, value: str) -> str:
    """`Environment="NAME=value"` with systemd's quoting (backslash, quote; `%` doubled, `$` as `$$`)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'Environment="{name}={escaped}"'


def _exec_line(argv: list[str]) -> str:
    return " ".join('"' + a.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'
                    for a in argv)


def unit_text(settings: Settings) -> str:
    env = [_env_line("ABP_HOME", str(settings.home))]
    if os.environ.get("ABP_DB_URL"):
        env.append(_env_line("ABP_DB_URL", settings.db_url))
    env_file = str(settings.home / "service.env").replace("%", "%%")
    return "\n".join([
        "[Unit]",
        "Description=agentic-batch: resume the jobs a reboot interrupted (abp resume --all)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "# The executors it starts stay in this unit's cgroup: stopping the unit must not kill them.",
        "KillMode=process",
        *env,
        f"EnvironmentFile=-{env_file}",
        f"ExecStart={_exec_line(resume_argv())}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def crontab_line(settings: Settings) -> str:
    env = f"ABP_HOME={shlex.quote(str(settings.home))}"
    if os.environ.get("ABP_DB_URL"):
        env += f" ABP_DB_URL={shlex.quote(settings.db_url)}"
    log = shlex.quote(str(settings.home / "resume.log"))
    return f"@reboot {env} {shlex.join(resume_argv())} >> {log} 2>&1"


def install_unit(settings: Settings, enable: bool = False, force: bool = False) -> BootUnit:
    """Write the user unit (an existing different one only with `force`); enable it only if asked."""
    path = unit_dir() / UNIT_NAME
    text = unit_text(settings)
    existed = path.exists()
    if existed and path.read_text(errors="replace") != text and not force:
        raise InvalidSpec(f"{path} exists and differs from the unit abp would write",
                          hint="see `abp service show`; replace it with `abp service install --force`")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    commands = [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", UNIT_NAME]]
    enabled = False
    if enable:
        if shutil.which("systemctl") is None:
            raise AbpError(f"wrote {path}, but systemctl is not on PATH to enable it",
                           hint="enable it where systemd runs, or use the @reboot crontab line (`abp service show`)")
        for argv in commands:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                said = (done.stderr or done.stdout).strip().splitlines()
                raise AbpError(f"wrote {path}, but `{shlex.join(argv)}` failed: "
                               + (said[-1] if said else f"exit {done.returncode}"))
        enabled = True
    user = os.environ.get("USER") or "$USER"
    todo = [] if enabled else [shlex.join(argv) for argv in commands]
    todo.append(f"loginctl enable-linger {user}  # so it runs at boot, not only at your first login")
    return BootUnit(path=str(path), written=True, replaced=existed, enabled=enabled, unit=text,
                    crontab=crontab_line(settings), next_steps=todo)


def show_unit(settings: Settings) -> BootUnit:
    path = unit_dir() / UNIT_NAME
    return BootUnit(path=str(path), written=False, replaced=False, enabled=False, unit=unit_text(settings),
                    crontab=crontab_line(settings),
                    next_steps=[f"abp service install  # writes {path}"])
