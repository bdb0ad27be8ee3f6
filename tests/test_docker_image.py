"""The Dockerfile (no Docker engine runs here): two targets, `training` (the default: CUDA runtime, torch and the
train/k8s/remote extras) and `inference` (no CUDA, no torch: the base install + parquet); dependency stages that install
exactly pyproject's lists before any code is copied; every package directory copied and not ignored; non-root user,
`cmsdl` entrypoint; the slow test builds the package from the same build context and checks that it exposes `cmsdl`."""

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

TRAINING_EXTRAS = ("train", "k8s", "remote")
INFERENCE_EXTRAS = ("parquet",)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in (REPO / "Dockerfile").read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()]


def stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """{stage name: (its FROM image with the global ARGs filled in, its instructions)}, in Dockerfile order."""
    steps = instructions()
    first_from = next(i for i, (kind, _) in enumerate(steps) if kind == "FROM")
    args = dict(a.split("=", 1) for kind, a in steps[:first_from] if kind == "ARG" and "=" in a)
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] = []
    for kind, arguments in steps[first_from:]:
        if kind == "FROM":
            image, _, name = arguments.partition(" AS ")
            current = []
            found[name.strip()] = (re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image.strip()), current)
        else:
            current.append((kind, arguments))
    return found


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


def test_training_is_the_default_target_and_inference_has_no_cuda() -> None:
    found = stages()
    assert list(found)[-1] == "training", "`docker build .` builds the last stage: the training image"
    assert found["training"][0].startswith("nvidia/cuda:") and "-runtime-" in found["training"][0]
    assert "cuda" not in found["inference"][0], "the inference image needs no CUDA base"


@pytest.mark.parametrize("target", ["training", "inference"])
def test_each_image_runs_cmsdl_as_the_pods_non_root_user(target: str) -> None:
    steps = stages()[target][1]
    user = [a for kind, a in steps if kind == "USER"][-1]
    assert user.split(":")[0] == "1000", "non-root, the same uid as the pods' securityContext.runAsUser"
    assert json.loads(next(a for kind, a in steps if kind == "ENTRYPOINT")) == ["cmsdl"]
    assert any(kind == "RUN" and "pip install --no-deps /wheels/cmsdl-" in a for kind, a in steps)


def listed_requirements(stage: str, tmp_path: Path) -> list[str]:
    """What the requirements command of a dependency stage lists, run on the repository's pyproject.toml."""
    [run] = [a for kind, a in stages()[stage][1] if kind == "RUN" and "tomllib" in a]
    match = re.search(r'python -c "(.+?)"(?:\s+"\$(\w+)")?', run)
    args = dict(a.split("=", 1) for kind, a in stages()[stage][1] if kind == "ARG" and "=" in a)
    extra_args = [args[match.group(2)]] if match.group(2) else []  # the build argument's default, e.g. the extras
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return subprocess.run([sys.executable, "-c", match.group(1), *extra_args], cwd=tmp_path, check=True,
                          capture_output=True, text=True).stdout.split()


def test_the_dependency_stages_install_pyprojects_lists_before_any_code(tmp_path: Path) -> None:
    project = pyproject()["project"]
    base = listed_requirements("base-dependencies", tmp_path)
    assert base == [d.replace(" ", "") for d in project["dependencies"]]
    assert not any(name.startswith(("torch", "pytorch-lightning")) for name in base), "the base install has no torch"
    extras = project["optional-dependencies"]
    training = listed_requirements("training-dependencies", tmp_path)
    assert training == [d.replace(" ", "") for e in TRAINING_EXTRAS for d in extras[e]]
    inference = listed_requirements("inference-dependencies", tmp_path)
    assert inference == [d.replace(" ", "") for e in INFERENCE_EXTRAS for d in extras[e]]
    assert not any(name.startswith(("torch", "pytorch-lightning")) for name in inference)
    for stage in ("base-dependencies", "training-dependencies", "inference-dependencies"):
        copies = [a.split()[0] for kind, a in stages()[stage][1] if kind == "COPY"]
        assert copies in ([], ["pyproject.toml"]), f"{stage} copies only pyproject.toml (code changes keep its cache)"
    assert stages()["training-dependencies"][0] == stages()["inference-dependencies"][0] == "base-dependencies"
    assert stages()["wheel"][0] == "base-dependencies"
    froms = {target: [a for kind, a in stages()[target][1] if kind == "COPY" and a.startswith("--from=")]
             for target in ("training", "inference")}
    assert froms["training"][0].startswith("--from=training-dependencies ")
    assert froms["inference"][0].startswith("--from=inference-dependencies ")


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
    copied = {a.split()[0].rstrip("/") for kind, a in instructions() if kind == "COPY" and not a.startswith("--from=")}
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
