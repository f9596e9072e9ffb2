"""The `ferrolm` command: --version, doctor and demo."""

from __future__ import annotations

import json
import subprocess
import sys

import ferrolm
from ferrolm.cli import main


def test_version_flag_prints_the_package_version():
    out = subprocess.run(
        [sys.executable, "-m", "ferrolm.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"ferrolm {ferrolm.__version__}"


def test_python_dash_m_ferrolm_is_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "ferrolm", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"ferrolm {ferrolm.__version__}"


def test_doctor_reports_gpu_and_nvrtc_status_honestly(tmp_path, capsys):
    path = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    rows = {row[0]: row for row in report["sections"][0]["rows"]}
    assert rows["ferrolm"][1] == ferrolm.__version__
    assert rows["CPU threads"][1] >= 1
    if not ferrolm.cuda.driver_available():
        assert rows["CUDA driver"][2] == "missing"
        assert rows["GPUs"][1] == 0
    assert rows["NVRTC"][2] == ("ok" if ferrolm.cuda.nvrtc_available() else "missing")
    assert "| check | result | status |" in capsys.readouterr().out


def test_demo_runs_every_section_and_writes_json(tmp_path, capsys):
    path = tmp_path / "demo.json"
    assert main(["demo", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    titles = [s["title"] for s in report["sections"]]
    assert titles[0] == "Environment"
    assert any("quantizer" in t for t in titles)
    assert all(s["columns"] != ["error"] for s in report["sections"]), report
    assert "# ferrolm demo" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "doctor" in capsys.readouterr().out
