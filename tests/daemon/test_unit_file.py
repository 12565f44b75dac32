"""The shipped systemd unit, installed as its header (and the README) says: systemd-analyze verify."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "cvat-watch.service"
DROP_IN = ROOT / "config" / "cvat-watch.service.d" / "systemd-before-253.conf"
#: Where the install steps put the virtualenv (``python3 -m venv /opt/cvat-watch``).
VENV = "/opt/cvat-watch"


def _systemd_version(analyze: str) -> int:
    output = subprocess.run([analyze, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", output).group(1))  # type: ignore[union-attr]


def test_install_steps_and_unit_agree_on_one_venv() -> None:
    """The steps create the venv whose script ExecStart runs, and install the drop-in for old systemd."""
    text = UNIT.read_text()
    steps = [line.lstrip("# ").strip() for line in text.split("[Unit]")[0].splitlines()]
    assert f"sudo python3 -m venv {VENV}" in steps
    (exec_start,) = re.findall(r"(?m)^ExecStart=(\S+)", text)
    assert exec_start == f"{VENV}/bin/cvat-watch"
    assert any("config/cvat-watch.service.d/systemd-before-253.conf" in line for line in steps)
    assert re.search(r"(?m)^Type=notify-reload$", text) and not re.search(r"(?m)^ExecReload=", text)
    assert (
        "Type=notify\n" in DROP_IN.read_text() and "ExecReload=/bin/kill -HUP $MAINPID" in DROP_IN.read_text()
    )


def test_installed_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Installed as the steps say (the venv's script in place, the drop-in where systemd < 253),
    `systemd-analyze verify` passes with no complaint but the known one about notify-reload there."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    version = _systemd_version(analyze)
    # The venv of the steps, here: a folder whose bin/cvat-watch is this checkout's script.
    venv = tmp_path / "opt" / "cvat-watch"
    (venv / "bin").mkdir(parents=True)
    script = Path(sys.executable).with_name("cvat-watch")
    assert script.exists(), script
    os.symlink(script, venv / "bin" / "cvat-watch")
    system = tmp_path / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    installed = system / "cvat-watch.service"
    installed.write_text(UNIT.read_text().replace(f"{VENV}/", f"{venv}/"))
    if version < 253:
        (system / "cvat-watch.service.d").mkdir()
        shutil.copy(DROP_IN, system / "cvat-watch.service.d" / DROP_IN.name)
    result = subprocess.run([analyze, "verify", str(installed)], capture_output=True, text=True, timeout=60)
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "cvat-watch" in line
        and not (version < 253 and "Failed to parse service type, ignoring: notify-reload" in line)
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == []
    if version < 253:
        # The drop-in really is read: an unknown key in it is reported.
        (system / "cvat-watch.service.d" / "zz-probe.conf").write_text("[Service]\nNoSuchKey=1\n")
        probe = subprocess.run(
            [analyze, "verify", str(installed)], capture_output=True, text=True, timeout=60
        )
        assert "NoSuchKey" in probe.stderr
