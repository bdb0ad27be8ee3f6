"""The Dockerfile (no Docker engine runs here): CUDA runtime base, a cached dependency layer that installs exactly
pyproject's dependencies, every package directory copied and not ignored, non-root user, `cmsdl` entrypoint;
the slow test builds the package from the same build context and checks that it exposes `cmsdl`."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in (REPO / "Dockerfile").read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins, as in Docker)."""
    result = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern == "**" or any(fnmatch.fnmatch(c, pattern) for c in candidates):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_base_user_and_entrypoint() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    base = next(a for kind, a in steps if kind == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert base.startswith("nvidia/cuda:") and "-runtime-" in base, base
    user = [a for kind, a in steps if kind == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root"), "the image runs as a non-root user"
    assert user.split(":")[0] == "1000", "the same uid as the pods' securityContext.runAsUser"
    assert json.loads(next(a for kind, a in steps if kind == "ENTRYPOINT")) == ["cmsdl"]


def test_dependency_layer_comes_before_the_code_and_installs_pyprojects_dependencies(tmp_path: Path) -> None:
    steps = instructions()
    copies = [i for i, (kind, _) in enumerate(steps) if kind == "COPY"]
    assert steps[copies[0]][1].split()[0] == "pyproject.toml", "the first COPY brings only pyproject.toml"
    [dep_run] = [i for i, (kind, a) in enumerate(steps) if kind == "RUN" and "requirements.txt" in a]
    assert copies[0] < dep_run < copies[1], "dependencies install between pyproject.toml and the code"
    command = re.search(r'python -c "(.+?)"', steps[dep_run][1]).group(1)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    listed = subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout.split()
    assert listed == [d.replace(" ", "") for d in pyproject()["project"]["dependencies"]]
    assert any(kind == "RUN" and "pip install --no-deps ." in a for kind, a in steps[dep_run + 1:])


def top_level_dirs() -> set[str]:
    """Source directories of every package that pyproject.toml ships."""
    settings = pyproject()["tool"]["setuptools"]
    mapping = settings.get("package-dir", {})
    dirs = set()
    for package in settings["packages"]:
        parent = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len, default=None)
        path = mapping[parent] + package[len(parent):].replace(".", "/") if parent else package.replace(".", "/")
        dirs.add(path.split("/")[0])
    return dirs


def test_every_package_directory_is_copied_and_not_ignored() -> None:
    copied = {a.split()[0].rstrip("/") for kind, a in instructions() if kind == "COPY"}
    assert top_level_dirs() <= copied, f"not copied into the image: {top_level_dirs() - copied}"
    patterns = dockerignore()
    for source in copied:
        assert not ignored(source, patterns), f"{source} is copied but .dockerignore leaves it out"
    for kept_out in (".venv/bin/python", ".git/HEAD", "logs/train/x.ckpt", "data/workflows.json", "tests/conftest.py",
                     "cmsdl/__pycache__/cli.cpython-311.pyc"):
        assert ignored(kept_out, patterns), f"{kept_out} would be sent to the Docker daemon"


def build_context(tmp_path: Path) -> Path:
    """The files `docker build .` would see, by the rules of .dockerignore."""
    context = tmp_path / "context"
    patterns = dockerignore()
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and not rel.startswith((".venv/", ".git/")) and not ignored(rel, patterns):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)
    return context


@pytest.mark.slow
def test_the_package_built_from_the_docker_context_exposes_cmsdl(tmp_path: Path) -> None:
    context = build_context(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(context)], check=True)
    [wheel] = (tmp_path / "wheel").glob("cmsdl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"cmsdl/cli.py", "cmsdl/configs/train.yaml", "cmsdl/configs/k8s/default.yaml",
            "hydra_plugins/cmsdl_k8s_launcher/k8s_launcher.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cmsdl = cmsdl.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
