"""cmsdl.inference: torch-free, validates inputs against the contract, applies the training preprocessing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmsdl.data.workflow_sim import simulate_workflows
from cmsdl.evaluate import load_checkpoint, restore
from cmsdl.inference import InputError, Predictor


def test_importing_cmsdl_inference_loads_no_torch() -> None:
    code = ("import sys, cmsdl.inference, cmsdl.ntuple.scores, cmsdl.ntuple.simulate; heavy = [m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'pytorch_lightning', 'lightning', 'hydra', 'torchvision')]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_records_go_through_the_training_preprocessing(exported_model: Path, trained_checkpoint: Path,
                                                       workflows_file: Path) -> None:
    datamodule, _ = restore(load_checkpoint(trained_checkpoint))
    test_rows = datamodule.split_rows["test"]
    records = json.loads(workflows_file.read_text())["workflows"]
    kept = [r for r in records if r["action"] in ("acdc", "clone")]
    predictor = Predictor(exported_model)
    from_records = predictor.predict_records([kept[i] for i in test_rows])
    from_tensor = predictor.run(datamodule.splits["test"].features.numpy())
    np.testing.assert_allclose(from_records.probabilities, from_tensor.probabilities, atol=1e-6)
    assert set(from_records.labels) <= {"acdc", "clone"} and len(from_records.labels) == len(test_rows)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros((2, 3), np.float32), "shape [2, 3], expected [batch,"),
        (None, "expected a numpy array"),
        ("float64", "dtype float64, expected float32"),
        ("nan", "NaN or infinite"),
    ],
)
def test_model_input_is_checked_against_the_contract(exported_model: Path, inputs, message: str) -> None:
    predictor = Predictor(exported_model)
    n = predictor.contract.input.shape[1]
    if isinstance(inputs, str):
        inputs = np.zeros((2, n), np.float64 if inputs == "float64" else np.float32)
        if message.startswith("NaN"):  # a NaN in an otherwise valid batch
            inputs[0, 0] = np.nan
    with pytest.raises(InputError, match=re.escape(message)):
        predictor.run(inputs)


def test_unknown_feature_and_bad_records_are_named(exported_model: Path) -> None:
    predictor = Predictor(exported_model)
    with pytest.raises(InputError, match="unknown feature"):
        predictor.predict_rows([{"not-a-feature": 1.0}])
    with pytest.raises(InputError, match="field 'tasks'"):
        predictor.predict_records([{"name": "wf", "action": None}])
    with pytest.raises(InputError, match="tabular model; image inputs"):
        predictor.predict_images([b"x"])


def test_non_cmsdl_or_broken_model_files_are_refused(tmp_path: Path, exported_model: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(exported_model.read_bytes()[:100])
    with pytest.raises(ValueError, match="broken.onnx: not a loadable ONNX model"):
        Predictor(broken)
    import onnx

    plain = onnx.load(str(exported_model))
    del plain.metadata_props[:]
    with pytest.raises(ValueError, match="not a cmsdl model"):
        Predictor(plain.SerializeToString())


def test_predict_command_writes_one_row_per_record_in_order(tmp_path: Path, exported_model: Path) -> None:
    from conftest import run_cmsdl

    data = tmp_path / "new.json"
    doc = simulate_workflows(40, seed=99)
    data.write_text(json.dumps(doc))
    run_cmsdl("predict", f"model={exported_model}", f"input={data}", f"out={tmp_path / 'p.csv'}", cwd=tmp_path)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "id,label,p_acdc,p_clone" and len(lines) == 41
    assert [line.split(",")[0] for line in lines[1:]] == [w["name"] for w in doc["workflows"]]
    run_cmsdl("predict", f"model={exported_model}", f"input={data}", f"out={tmp_path / 'p.json'}", cwd=tmp_path)
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 40 and abs(rows[0]["p_acdc"] + rows[0]["p_clone"] - 1) < 1e-5
