"""A plain (non-editable) `pip install .` ships the configs and runs the seed experiment from any directory."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(REPO)], check=True)
    [built] = out.glob("cmsdl-*.whl")
    return built


def test_wheel_contains_every_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("cmsdl/configs/") for n in names if n.startswith("cmsdl/configs/") and n.endswith(".yaml")}
    in_repo = {str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped == in_repo


def test_non_editable_install_trains_outside_the_source_tree(tmp_path: Path, wheel: Path, workflows_file: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # dependencies come from the test environment (no multi-GB download); cmsdl itself is installed for real
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import cmsdl; print(cmsdl.__file__)"], cwd=work, check=True,
                           capture_output=True, text=True).stdout
    assert str(venv) in where, f"cmsdl imported from {where}, not from the installed wheel"
    subprocess.run([str(venv / "bin" / "cmsdl"), "train", "experiment=workflow_actions", "trainer.max_epochs=1",
                    f"data.source.path={workflows_file}", "callbacks.progress_bar.refresh_rate=0",
                    "run_name=installed"], cwd=work, check=True, capture_output=True)
    summary = json.loads((work / "logs" / "train" / "runs" / "installed" / "metrics.json").read_text())
    assert summary["epochs"] == 1
