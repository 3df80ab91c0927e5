"""`abp service install|show`: the systemd user unit that runs `abp resume --all` at boot, checked by
systemd's own parser, and the @reboot crontab line run as cron would run it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.abp import abp


@pytest.fixture
def xdg(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_install_writes_a_unit_systemd_accepts_and_does_not_enable_it(xdg: dict[str, str], abp_home: Path) -> None:
    result = abp("service", "install", "--json", env=xdg)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    path = Path(xdg["XDG_CONFIG_HOME"]) / "systemd" / "user" / "abp-resume.service"
    assert report["path"] == str(path) and report["written"] and not report["enabled"]
    text = path.read_text()
    assert text == report["unit"]
    assert f'Environment="ABP_HOME={abp_home}"' in text and "KillMode=process" in text
    assert '"-m" "agentic_batch" "resume" "--all"' in text and "WantedBy=default.target" in text
    assert report["next_steps"][:2] == ["systemctl --user daemon-reload", "systemctl --user enable abp-resume.service"]
    assert not (Path(xdg["XDG_CONFIG_HOME"]) / "systemd" / "user" / "default.target.wants").exists()
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr

    again = abp("service", "install", env=xdg)  # the same unit: fine, says it replaced it
    assert again.returncode == 0 and "replaced" in again.stderr
    path.write_text(text + "# my edit\n")
    refused = abp("service", "install", env=xdg)
    assert refused.returncode == 1 and "exists and differs" in refused.stderr and "--force" in refused.stderr
    assert path.read_text().endswith("# my edit\n")  # untouched
    assert abp("service", "install", "--force", env=xdg).returncode == 0 and path.read_text() == text


def test_show_prints_the_unit_and_a_crontab_line_that_works(xdg: dict[str, str], abp_home: Path) -> None:
    shown = abp("service", "show", env=xdg)
    assert shown.returncode == 0 and shown.stdout.startswith("[Unit]\n")
    assert not (Path(xdg["XDG_CONFIG_HOME"]) / "systemd").exists()
    line = json.loads(abp("service", "show", "--json", env=xdg).stdout)["crontab"]
    assert line.startswith(f"@reboot ABP_HOME={abp_home} ") and line.endswith(f">> {abp_home}/resume.log 2>&1")
    abp_home.mkdir(parents=True, exist_ok=True)
    ran = subprocess.run(["sh", "-c", line.removeprefix("@reboot ")], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0
    assert "no RUNNING jobs" in (abp_home / "resume.log").read_text()
