"""A plain (non-editable) `pip install .` ships the configs and runs the seed experiment from any directory; the base
install (pyproject's dependencies, no extras) predicts and serves without torch, scikit-learn or pyarrow."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from toy_onnx import top_model

NOT_IN_THE_BASE_INSTALL = ("torch", "pytorch_lightning", "torchvision", "sklearn", "matplotlib", "kubernetes", "onnx",
                           "pyarrow")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def package_directories() -> set[str]:
    """Every package the wheel must hold: Python packages under cmsdl/ and hydra_plugins/, and configs/ with each
    config group below it (shipped as cmsdl.configs.<group>)."""
    python = {".".join(p.parent.relative_to(REPO).parts) for root in ("cmsdl", "hydra_plugins")
              for p in (REPO / root).rglob("__init__.py")}
    config_dirs = [REPO / "configs", *(REPO / "configs").rglob("*")]
    configs = {".".join(("cmsdl", *d.relative_to(REPO).parts)) for d in config_dirs
               if d.is_dir() and any(d.glob("*.yaml"))}
    return python | configs


def test_pyproject_lists_every_package_and_config_group() -> None:
    """setuptools warns about (and one day drops) a package directory that `packages` does not name."""
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    assert listed == package_directories(), (f"missing from pyproject.toml: {sorted(package_directories() - listed)}; "
                                             f"listed but absent: {sorted(listed - package_directories())}")


def test_the_base_install_has_no_torch_and_the_dev_extra_holds_every_other_extra() -> None:
    project = pyproject()["project"]
    base = " ".join(project["dependencies"])
    for heavy in ("torch", "lightning", "scikit-learn", "matplotlib", "kubernetes", "xrootd", "mlflow", "pyspark",
                  "pyarrow"):
        assert heavy not in base, f"{heavy} is in the base install"
    extras = project["optional-dependencies"]
    [own] = [d for d in extras["dev"] if d.startswith("cmsdl[")]
    assert set(own.removeprefix("cmsdl[").rstrip("]").split(",")) == set(extras) - {"dev"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(REPO)], check=True)
    [built] = out.glob("cmsdl-*.whl")
    return built


@pytest.mark.slow
def test_wheel_contains_every_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("cmsdl/configs/") for n in names if n.startswith("cmsdl/configs/") and n.endswith(".yaml")}
    in_repo = {str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped == in_repo


@pytest.mark.slow
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "cmsdl serve exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with pyproject's base dependencies (from the package index or pip's cache) and the wheel."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    requirements = venv.parent / "requirements.txt"
    requirements.write_text("\n".join(pyproject()["project"]["dependencies"]) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True, timeout=1500)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    return venv


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_base_install_predicts_and_serves_without_torch(tmp_path: Path, base_venv: Path) -> None:
    cmsdl = str(base_venv / "bin" / "cmsdl")
    absent = subprocess.run([str(base_venv / "bin" / "python"), "-c",
                             "import importlib.util as u; print(' '.join(m for m in "
                             f"{NOT_IN_THE_BASE_INSTALL!r} if u.find_spec(m) is None))"],
                            check=True, capture_output=True, text=True).stdout.split()
    assert absent == list(NOT_IN_THE_BASE_INSTALL), "the base venv holds a package of an extra"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    models = tmp_path / "models"
    models.mkdir()
    (models / "top.onnx").write_bytes(top_model(n_features=4))
    rows = tmp_path / "rows.csv"
    x = np.random.default_rng(1).normal(size=(5, 4))
    rows.write_text("f00,f01,f02,f03\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in x) + "\n")
    subprocess.run([cmsdl, "predict", f"model={models / 'top.onnx'}", f"input={rows}", "out=scores.csv"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 1 + len(x)

    port = free_port()
    server = subprocess.Popen([cmsdl, "serve", f"models={models}", f"port={port}"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/ready", server)
        body = json.dumps({"rows": [dict(zip(["f00", "f01", "f02", "f03"], map(float, row))) for row in x]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/models/top/predict", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert len(answer["probabilities"]) == len(x) and len(answer["probabilities"][0]) == 2
    finally:
        server.terminate()
        server.wait(timeout=30)

    train = subprocess.run([cmsdl, "train"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert train.returncode == 2
    assert train.stderr.startswith("error: cmsdl train needs the training extra: pip install 'cmsdl[train]'")
    help_text = subprocess.run([cmsdl, "train", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                               check=True, timeout=120).stdout
    assert "trainer: cpu, ddp, default, gpu" in help_text, "help needs no extra"
