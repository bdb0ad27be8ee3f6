"""The layout's rules (docs/architecture.md): imports point one way, and the input adapters run without torch.

`features`, `inference`, `serve`, `io` and `sim` never import torch or lightning, directly or through another cmsdl
module; every adapter in cmsdl/features runs on a tiny input in a process where importing torch fails.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cmsdl"
TORCH_FREE = ("features", "inference", "serve", "io", "sim")
HEAVY = {"torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning"}


def module_file(name: str) -> Path | None:
    """The source file of a cmsdl module (a package's __init__.py), or None if it is not one."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path) -> set[str]:
    """Every module that a file imports, at any depth of its code (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names if module_file(f"{node.module}.{alias.name}")}
    return names


def heavy_imports(start: str) -> dict[str, list[str]]:
    """Heavy third-party imports reachable from a cmsdl module through cmsdl modules: {module: chain}."""
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    todo = [(start, [start])]
    while todo:
        name, chain = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        for imported in imported_names(path):
            top = imported.split(".")[0]
            if top in HEAVY:
                found.setdefault(imported, chain)
            elif top == "cmsdl" or top == "hydra_plugins":
                parts = imported.split(".")
                for i in range(2, len(parts) + 1):  # cmsdl.a.b also runs cmsdl/a/__init__.py
                    todo.append((".".join(parts[:i]), [*chain, ".".join(parts[:i])]))
    return found


def torch_free_modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for package in TORCH_FREE for p in (PACKAGE / package).rglob("*.py"))


def test_the_torch_free_packages_exist_and_hold_modules() -> None:
    modules = torch_free_modules()
    for package in TORCH_FREE:
        assert any(m.startswith(f"cmsdl.{package}.") for m in modules), package


@pytest.mark.parametrize("module", torch_free_modules())
def test_no_torch_free_module_reaches_torch_or_lightning(module: str) -> None:
    found = heavy_imports(module)
    assert not found, "; ".join(f"{' -> '.join(chain)} imports {name}" for name, chain in found.items())


def test_the_chain_finder_sees_torch_through_cmsdl_modules() -> None:
    """The test above can fail: a DataModule reaches torch, also through the modules it imports."""
    assert "torch" in heavy_imports("cmsdl.data.tabular")
    assert any(name.startswith("torch") for name in heavy_imports("cmsdl.commands.export"))


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_importing_the_torch_free_packages_loads_no_torch() -> None:
    imports = "\n".join(f"import {m}" for m in torch_free_modules())
    proc = run_python(f"import sys\n{imports}\n"
                      f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r})\n"
                      "assert not loaded, loaded\n")
    assert proc.returncode == 0, proc.stderr[-3000:]


BLOCK_TORCH = """
import importlib.abc, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "lightning", "pytorch_lightning"}:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch could still be imported")
"""

RUN_ADAPTERS = """
import json, pkgutil, importlib, tempfile
from pathlib import Path

import numpy as np
import uproot

import cmsdl.features
for info in pkgutil.walk_packages(cmsdl.features.__path__, "cmsdl.features."):
    importlib.import_module(info.name)

from cmsdl.features.images.png import decode_png, encode_png
from cmsdl.features.images.read import HitChunk
from cmsdl.features.images.render import regularize_spec, render_chunk
from cmsdl.features.popularity.records import write_popularity
from cmsdl.features.popularity.source import PopularitySource, features_from_records as popularity_rows
from cmsdl.features.root_table.read import ReadUnit, features_from_records as root_rows, read_unit
from cmsdl.features.root_table.spec import parse_spec
from cmsdl.features.transfers.source import TransferSource, features_from_records as transfer_rows
from cmsdl.features.workflows.source import WorkflowActionSource, features_from_records as workflow_rows
from cmsdl.sim.popularity import simulate_popularity
from cmsdl.sim.transfers import simulate_transfers, write_log
from cmsdl.sim.workflows import simulate_workflows

tmp = Path(tempfile.mkdtemp())
done = []

def fitted_rows(source):
    records, labels = source.load()
    train = [records[i] for i in range(min(len(records), 40))]
    source.fit(train)
    x = source.transform(train)
    assert x.ndim == 2 and len(x) == len(train) and np.isfinite(x).all()
    return source.state_dict(), x

document = simulate_workflows(n_workflows=40, seed=3, actions=("acdc", "clone"))
(tmp / "wf.json").write_text(json.dumps(document))
state, x = fitted_rows(WorkflowActionSource(str(tmp / "wf.json")))
assert np.allclose(workflow_rows(state, document["workflows"][:40]), x)
done.append("workflows")

records, _ = simulate_transfers(n_transfers=60, seed=3, n_sites=4)
write_log(tmp / "transfers.log", records)
state, x = fitted_rows(TransferSource(str(tmp / "transfers.log")))
assert transfer_rows(state, records[:3]).shape == (3, x.shape[1])
done.append("transfers")

write_popularity(tmp / "pop.csv", simulate_popularity(n_datasets=60, n_weeks=14, seed=3, prehistory_weeks=4))
state, x = fitted_rows(PopularitySource(str(tmp / "pop.csv")))
row = {"tier": state["tiers"][0], **{c: 1.0 for c in state["raw_columns"]}}
assert popularity_rows(state, [row]).shape == (1, x.shape[1])
done.append("popularity")

with uproot.recreate(tmp / "events.root") as f:
    f["Events"] = {"MET_pt": np.array([10.0, 20.0, 30.0]), "nJet": np.array([1, 2, 0], np.int32)}
spec_raw = {"files": {"a": str(tmp / "events.root"), "b": str(tmp / "events.root")}, "tree": "Events", "flat": {"met": "MET_pt", "n": "nJet"}}
chunk = read_unit(parse_spec(spec_raw), ReadUnit(str(tmp / "events.root"), 0, 0, 3))
assert chunk.features.tolist() == [[10.0, 1.0], [20.0, 2.0], [30.0, 0.0]]
assert root_rows({"spec": spec_raw}, [{"MET_pt": 5.0, "nJet": 3}]).tolist() == [[5.0, 3.0]]
done.append("root_table")

spec = regularize_spec("xy", size=16)
hits = {"x": np.array([10.0, -20.0]), "y": np.array([5.0, 0.0]), "z": np.array([0.0, 1.0]),
        "layer": np.array([0, 1]), "subdet": np.array([0, 0])}
images = render_chunk(HitChunk(np.arange(1), np.zeros(2, np.int64), hits), spec)
assert images.dtype == np.uint8 and images.shape[0] == 1 and images.any()
(tmp / "e.png").write_bytes(encode_png(images[0]))
assert (decode_png(tmp / "e.png", images.shape[1]) == images[0]).all()
done.append("images")
print(" ".join(done))
"""


def test_every_adapter_runs_with_torch_blocked() -> None:
    proc = run_python(BLOCK_TORCH + textwrap.dedent(RUN_ADAPTERS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["workflows", "transfers", "popularity", "root_table", "images"]


def test_the_torch_block_works() -> None:
    """The test above can fail: with the finder installed, a module that needs torch does not import."""
    proc = run_python(BLOCK_TORCH + "import cmsdl.data.tabular\n")
    assert proc.returncode != 0 and "blocked in this test" in proc.stderr


def test_a_checkpoint_naming_classes_at_their_old_module_still_evaluates(tmp_path: Path,
                                                                          trained_checkpoint: Path) -> None:
    """Checkpoints keep their resolved config; one written before the move names the data source at
    cmsdl.data.workflow_features, which cmsdl.checkpoint.RENAMED_MODULES maps to its new module."""
    import torch
    from conftest import run_cmsdl

    from cmsdl.checkpoint import load_checkpoint

    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)
    source = checkpoint["cmsdl"]["config"]["data"]["source"]
    assert source["_target_"] == "cmsdl.features.workflows.source.WorkflowActionSource"
    source["_target_"] = "cmsdl.data.workflow_features.WorkflowActionSource"
    source["matrix"]["_target_"] = "cmsdl.data.workflow_features.WorkflowMatrix"
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    restored = load_checkpoint(old)["cmsdl"]["config"]["data"]["source"]
    assert restored["_target_"] == "cmsdl.features.workflows.source.WorkflowActionSource"
    assert restored["matrix"]["_target_"] == "cmsdl.features.workflows.source.WorkflowMatrix"
    proc = run_cmsdl("eval", f"ckpt={old}", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert "test: accuracy" in proc.stdout
