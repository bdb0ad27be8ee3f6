"""`cmsdl export`: ONNX file with embedded contract, parity with PyTorch, runnable without cmsdl."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cmsdl.checkpoint import load_checkpoint, restore, restore_model
from cmsdl.config import compose_run_config
from cmsdl.export.exporter import InferenceGraph, ParityError, export, to_onnx
from cmsdl.inference import Predictor
from cmsdl.inference.arrays import standardize


def test_export_embeds_the_contract_and_passes_the_checker(exported_model: Path) -> None:
    model = onnx.load(str(exported_model))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["cmsdl.task"] == "classification"
    assert json.loads(meta["cmsdl.class_names"]) == ["acdc", "clone"]
    [spec] = json.loads(meta["cmsdl.inputs"])
    assert spec["name"] == "features" and spec["shape"][0] == "batch" and spec["dtype"] == "float32"
    pre = json.loads(meta["cmsdl.preprocessing"])
    assert pre["kind"] == "tabular" and len(pre["feature_names"]) == spec["shape"][1] == len(pre["mean"])
    assert pre["in_graph"] is True, "the contract records that the graph standardises its raw input itself"
    assert pre["source"]["kind"] == "workflow_actions" and pre["source"]["matrix"]["codes"]
    report = json.loads(exported_model.with_name("workflow_actions.export.json").read_text())
    assert max(report["parity"]["max_abs_diff"].values()) <= 1e-4


def test_onnxruntime_on_raw_features_matches_pytorch_after_python_preprocessing(exported_model: Path,
                                                                                 trained_checkpoint: Path) -> None:
    """The graph takes the raw feature rows of the test records; PyTorch gets them standardised by Python."""
    datamodule, model = restore(load_checkpoint(trained_checkpoint))
    test_records = [datamodule.records[i] for i in datamodule.split_rows["test"]]
    raw = datamodule.source.transform(test_records).astype(np.float32)
    session = ort.InferenceSession(str(exported_model), providers=["CPUExecutionProvider"])
    graph = InferenceGraph(model).eval()
    for size in (1, 7, 64, len(raw)):
        with torch.no_grad():
            expected = graph(torch.from_numpy(standardize(raw[:size], datamodule.mean, datamodule.std))).numpy()
        got = session.run(["probabilities"], {"features": raw[:size]})[0]
        assert got.shape == (size, 2)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_the_graph_standardises_its_raw_input_with_onnx_ops(exported_model: Path) -> None:
    """(x - mean) / std is in the graph, before the network's first layer, with the contract's statistics."""
    model = onnx.load(str(exported_model))
    pre = json.loads({p.key: p.value for p in model.metadata_props}["cmsdl.preprocessing"])
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    sub, div = ([n for n in model.graph.node if n.op_type == op] for op in ("Sub", "Div"))
    assert sub[0].input[0] == "features" and div[0].input[0] == sub[0].output[0]
    np.testing.assert_array_equal(constants[sub[0].input[1]], np.float32(pre["mean"]))
    np.testing.assert_array_equal(constants[div[0].input[1]], np.float32(pre["std"]))


def test_a_client_without_cmsdl_or_preprocessing_code_reproduces_the_predictor(exported_model: Path) -> None:
    """A C++-style consumer: raw feature values in metadata order straight into a bare onnxruntime session (no
    mean, no std, no cmsdl) give the Predictor's scores."""
    rows = [{"50660|good": 2.5, "84|bad": 1.4}, {"50664|good": 3.7, "71304|good": 2.1, "-1|good": 0.7}]
    client = r'''
import json, sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
names = json.loads(session.get_modelmeta().custom_metadata_map["cmsdl.preprocessing"])["feature_names"]
raw = np.array([[row.get(n, 0.0) for n in names] for row in json.loads(sys.argv[2])], dtype=np.float32)
print(json.dumps({"p": session.run(None, {"features": raw})[0].tolist(),
                  "cmsdl": [m for m in sys.modules if m.startswith("cmsdl")]}))
'''
    proc = subprocess.run([sys.executable, "-c", client, str(exported_model), json.dumps(rows)],
                          capture_output=True, text=True, check=True, cwd="/")
    result = json.loads(proc.stdout)
    assert result["cmsdl"] == []
    expected = Predictor(exported_model).predict_rows(rows).probabilities
    np.testing.assert_allclose(np.array(result["p"]), expected, atol=1e-6)


def test_a_file_exported_before_the_scaling_moved_into_the_graph_still_predicts_the_same(
        exported_model: Path, trained_checkpoint: Path, workflows_file: Path, tmp_path: Path) -> None:
    """Written the old way (the network alone on standardised input, no `in_graph` in the contract): the
    predictor standardises for it, and records, rows and ROOT-style scaled batches score as with the new file."""
    new = Predictor(exported_model)
    pre = {key: value for key, value in new.contract.preprocessing.items() if key != "in_graph"}
    old_contract = replace(new.contract, preprocessing=pre)
    n = len(pre["feature_names"])
    model = restore_model(load_checkpoint(trained_checkpoint))
    old_file = tmp_path / "old.onnx"
    old_file.write_bytes(to_onnx(InferenceGraph(model).eval(), torch.zeros(2, n), old_contract, 17).SerializeToString())
    old = Predictor(old_file)
    assert not old.contract.preprocessing_in_graph and new.contract.preprocessing_in_graph
    records = json.loads(workflows_file.read_text())["workflows"][:50]
    np.testing.assert_allclose(old.predict_records(records).probabilities,
                               new.predict_records(records).probabilities, atol=1e-5)
    raw = np.random.default_rng(0).uniform(0, 5, size=(9, n))
    np.testing.assert_allclose(old.run(old.scale(raw)).probabilities, new.run(new.scale(raw)).probabilities,
                               atol=1e-5)


def test_int8_and_fp16_siblings_are_written_with_their_parity(exported_model: Path) -> None:
    report = json.loads(exported_model.with_name("workflow_actions.export.json").read_text())
    for tag in ("int8", "fp16"):
        sibling = exported_model.with_name(f"workflow_actions.{tag}.onnx")
        assert sibling.is_file() and report[tag]["model"] == str(sibling)
        assert Predictor(sibling).contract.class_names == ["acdc", "clone"]
    assert max(report["int8"]["max_abs_diff"].values()) < 0.1


def test_parity_failure_names_the_difference_and_writes_nothing(tmp_path: Path, trained_checkpoint: Path) -> None:
    out = tmp_path / "m.onnx"
    cfg = compose_run_config("export", [f"ckpt={trained_checkpoint}", f"out={out}", "parity.atol=-1"])
    with pytest.raises(ParityError, match=r"differs from PyTorch by .* \(max abs.*m.onnx not written"):
        export(cfg)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_checkpoint_stores_64_preprocessed_rows_of_the_test_split(trained_checkpoint: Path) -> None:
    checkpoint = load_checkpoint(trained_checkpoint)
    datamodule, _ = restore(checkpoint)
    test_rows = torch.cat([b[0] for b in datamodule.split_loader("test")])
    stored = checkpoint["cmsdl"]["parity_inputs"]
    assert stored.dtype == torch.float32 and torch.equal(stored, test_rows[:64])


def with_data_moved_away(trained_checkpoint: Path, path: Path) -> Path:
    """A copy of the checkpoint whose training data file no longer exists."""
    checkpoint = load_checkpoint(trained_checkpoint)
    checkpoint["cmsdl"]["config"]["data"]["source"]["path"] = str(path.with_name("deleted.json"))
    torch.save(checkpoint, path)
    return path


def test_export_reads_no_data(tmp_path: Path, trained_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.onnx"
    status, stderr = run_export(capsys, f"ckpt={with_data_moved_away(trained_checkpoint, tmp_path / 'c.ckpt')}",
                                f"out={out}")
    assert status == 0, stderr[-2000:]
    report = json.loads((tmp_path / "m.export.json").read_text())
    assert report["parity"]["samples"] == 64 and set(report["parity"]["max_abs_diff"]) == {"1", "7", "64"}
    assert Predictor(out).contract.class_names == ["acdc", "clone"]


@pytest.mark.slow
def test_export_as_the_readme_writes_it_with_the_training_data_deleted(tmp_path: Path, workflows_file: Path) -> None:
    from conftest import run_cmsdl, train_args

    data = tmp_path / "workflows.json"
    shutil.copy(workflows_file, data)
    run_cmsdl(*train_args(data, tmp_path / "logs", "trainer.max_epochs=1", "run_name=wf1"), cwd=tmp_path)
    data.unlink()
    (tmp_path / "models").mkdir()
    proc = run_cmsdl("export", "ckpt=logs/train/runs/wf1", "out=models/workflow_actions.onnx", cwd=tmp_path)
    assert "no parity samples" not in proc.stdout
    report = json.loads((tmp_path / "models" / "workflow_actions.export.json").read_text())
    assert report["parity"]["samples"] == 64 and max(report["parity"]["max_abs_diff"].values()) <= 1e-4


def without_parity_samples(trained_checkpoint: Path, path: Path) -> Path:
    """A copy of the checkpoint as cmsdl wrote it before parity samples were stored."""
    checkpoint = load_checkpoint(trained_checkpoint)
    del checkpoint["cmsdl"]["parity_inputs"]
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_without_parity_samples_reads_them_from_its_data(tmp_path: Path, trained_checkpoint: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    old = without_parity_samples(trained_checkpoint, tmp_path / "old.ckpt")
    report = export(compose_run_config("export", [f"ckpt={old}", f"out={tmp_path / 'm.onnx'}", "parity.samples=100"]))
    assert f"export: {old} holds no parity samples (written by an older cmsdl): reading them from its data\n" in \
        capsys.readouterr().out
    assert report["parity"]["samples"] == 64, "the largest batch size compared: more were once reported, not read"
    assert (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize("samples", ["0", "-3", "many", "true"])
def test_parity_samples_must_be_a_positive_integer(samples: str, tmp_path: Path, trained_checkpoint: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    status, stderr = run_export(capsys, f"ckpt={trained_checkpoint}", f"out={tmp_path / 'm.onnx'}",
                                f"parity.samples={samples}")
    assert status == 2 and stderr.splitlines()[-1].startswith("error: parity.samples: got "), stderr[-2000:]
    assert "expected an integer >= 1 (at most 64 are compared)" in stderr and not list(tmp_path.iterdir())


def test_without_parity_samples_and_without_data_export_fails_in_one_line(tmp_path: Path, trained_checkpoint: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    old = without_parity_samples(with_data_moved_away(trained_checkpoint, tmp_path / "c.ckpt"), tmp_path / "old.ckpt")
    status, stderr = run_export(capsys, f"ckpt={old}", f"out={tmp_path / 'm.onnx'}")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and "Traceback" not in stderr and len(errors) == 1, stderr[-2000:]
    assert str(tmp_path / "deleted.json") in errors[0]
    assert not (tmp_path / "m.onnx").exists()


def test_a_foreign_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, fake)
    from conftest import run_cmsdl

    proc = run_cmsdl("export", f"ckpt={fake}", f"out={tmp_path / 'x.onnx'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "was not written by `cmsdl train`" in proc.stderr


@pytest.mark.slow
def test_regression_model_evaluates_exports_and_predicts_raw_records(tmp_path: Path) -> None:
    from cmsdl.features.transfers.records import read_transfer_log
    from cmsdl.sim.transfers import simulate_transfers, write_log
    from conftest import run_cmsdl

    log_file = write_log(tmp_path / "transfers.log", simulate_transfers(800, seed=5)[0])
    run_cmsdl("train", "experiment=transfer_latency", f"data.source.path={log_file}", f"paths.log_dir={tmp_path}",
              "run_name=tl", "trainer=cpu", "trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0",
              cwd=tmp_path)
    best = json.loads((tmp_path / "train" / "runs" / "tl" / "metrics.json").read_text())["best_checkpoint"]
    run_cmsdl("eval", f"ckpt={best}", f"paths.log_dir={tmp_path}", "run_name=e", cwd=tmp_path)
    metrics = json.loads((tmp_path / "eval" / "runs" / "e" / "metrics.json").read_text())
    assert set(metrics) >= {"mae", "rmse", "r2", "n"} and (tmp_path / "eval/runs/e/predicted_vs_true.png").is_file()
    run_cmsdl("export", f"ckpt={best}", f"out={tmp_path / 'latency.onnx'}", cwd=tmp_path)
    predictor = Predictor(tmp_path / "latency.onnx")
    assert predictor.contract.task == "regression" and predictor.contract.outputs[0].shape == ["batch", 1]
    records = read_transfer_log(log_file, "<EOR>").records[:5]
    result = predictor.predict_records(records)
    assert result.outputs.shape == (5, 1) and np.isfinite(result.outputs).all()


def run_export(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """`cmsdl export <args>` through the command's entry point in this process: exit status and stderr."""
    from cmsdl.cli import main

    capsys.readouterr()
    try:
        status = main(["export", *args])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("level", ["null", "basic", "extended", "all"])
def test_every_optimize_and_quantize_combination_exports_completely(level: str, quantize: bool, tmp_path: Path,
                                                                    trained_checkpoint: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """optimize=extended|all with quantize=true crashed in the quantiser and left m.onnx without its report."""
    out = tmp_path / "m.onnx"
    status, stderr = run_export(capsys, f"ckpt={trained_checkpoint}", f"out={out}", f"optimize={level}",
                                f"quantize={str(quantize).lower()}")
    assert status == 0, stderr[-2000:]
    expected = {"m.onnx", "m.export.json"} | ({"m.int8.onnx"} if quantize else set())
    assert {p.name for p in tmp_path.iterdir()} == expected, "no staged or partial files are left"
    report = json.loads((tmp_path / "m.export.json").read_text())
    assert report["optimize"] == (None if level == "null" else level)
    rows = [{"50660|good": 12.0, "84|bad": 3.0}]
    for name in expected - {"m.export.json"}:
        probabilities = Predictor(tmp_path / name).predict_rows(rows).probabilities
        assert probabilities.shape == (1, 2) and np.isfinite(probabilities).all()
    if quantize:
        assert max(report["int8"]["max_abs_diff"].values()) < 0.1


def test_a_failing_sibling_leaves_every_earlier_output_untouched(tmp_path: Path, trained_checkpoint: Path,
                                                                 capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """All-or-nothing: the int8 step fails after the main model passed its parity check; nothing is replaced."""
    import cmsdl.export.exporter as exporter

    def broken_quantizer(*args: object) -> None:
        raise RuntimeError("Unable to find data type for weight_name='w'\nsecond line")

    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier model")
    (tmp_path / "m.export.json").write_text("{}")
    monkeypatch.setattr(exporter, "quantize_int8", broken_quantizer)
    status, stderr = run_export(capsys, f"ckpt={trained_checkpoint}", f"out={out}", "optimize=all", "quantize=true")
    assert status == 2 and "Traceback" not in stderr
    assert ("error: export: quantize=true (dynamic int8) failed (RuntimeError: Unable to find data type for "
            "weight_name='w'); nothing written") in stderr.splitlines()
    assert out.read_bytes() == b"earlier model" and (tmp_path / "m.export.json").read_text() == "{}"
    assert {p.name for p in tmp_path.iterdir()} == {"m.onnx", "m.export.json"}


def test_bad_options_fail_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status, stderr = run_export(capsys, f"ckpt={tmp_path / 'missing.ckpt'}", f"out={tmp_path / 'm.onnx'}",
                                "optimize=fastest")
    assert status == 2 and "error: optimize: got 'fastest', expected one of basic, extended, all or null" in stderr
    status, stderr = run_export(capsys, f"ckpt={tmp_path / 'missing.ckpt'}", f"out={tmp_path / 'm.json'}")
    assert status == 2 and "error: out: got" in stderr and "expected a file name ending in .onnx" in stderr
    assert not list(tmp_path.iterdir())
