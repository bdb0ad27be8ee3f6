"""cmsdl.inference: torch-free, validates inputs against the contract, applies the training preprocessing."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

import toy_onnx
from cmsdl.evaluate import load_checkpoint, restore
from cmsdl.features.images.png import SIGNATURE, png_chunk
from cmsdl.inference import ContractError, InputError, Predictor, load_npy
from cmsdl.sim.workflows import simulate_workflows


def test_importing_cmsdl_inference_loads_no_torch() -> None:
    code = ("import sys, cmsdl.inference, cmsdl.inference.scores, cmsdl.sim.nanoaod, cmsdl.export.triton; "
            "heavy = [m for m in sys.modules "
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
    raw = datamodule.source.transform([datamodule.records[i] for i in test_rows]).astype(np.float32)
    from_tensor = predictor.run(raw)  # the graph takes raw feature rows (it standardises them itself)
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


FEATURES = [f"f{i:02d}" for i in range(45)]


def toy_tabular(**changes: object) -> bytes:
    """The toy 45-feature model with its cmsdl contract changed by `changes` (whole keys)."""
    contract = toy_onnx.tabular_contract(FEATURES, ["b", "t"]) | changes
    return toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2), contract)


def tensor(name: str = "features", shape: list | None = None, dtype: str = "float32") -> list[dict]:
    return [{"name": name, "shape": shape or ["batch", 45], "dtype": dtype}]


def preprocessing(**changes: object) -> dict:
    return toy_onnx.tabular_contract(FEATURES, ["b", "t"])["preprocessing"] | changes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inputs": [1, 2]}, "cmsdl.inputs[0]: expected an object"),
        ({"inputs": []}, "cmsdl.inputs must be a non-empty list"),
        ({"inputs": "{"}, "cmsdl.inputs is not valid JSON"),
        ({"inputs": tensor(dtype="float128")}, "cmsdl.inputs[0].dtype: got 'float128'"),
        ({"inputs": tensor(shape=[45])}, 'cmsdl.inputs[0].shape: expected ["batch", positive sizes...]'),
        ({"inputs": tensor() * 2}, "cmsdl.inputs lists 2 tensors; cmsdl models take one"),
        ({"inputs": tensor(name="x")}, "cmsdl.inputs names ['x'], but the graph's inputs are ['features']"),
        ({"inputs": tensor(dtype="float64"), "preprocessing": preprocessing()}, "the graph has float32"),
        ({"outputs": [{"name": "probabilities", "shape": ["batch", 3], "dtype": "float32"}]},
         "outputs[0].shape is ['batch', 3], expected [batch, 2]"),
        ({"class_names": []}, "cmsdl.class_names must be a non-empty list of strings"),
        ({"task": "clustering"}, "cmsdl.task is 'clustering'"),
        ({"preprocessing": []}, "cmsdl.preprocessing must be an object"),
        ({"preprocessing": preprocessing(kind="audio")}, "cmsdl.preprocessing.kind is 'audio'"),
        ({"preprocessing": preprocessing(feature_names=FEATURES[:44])}, "44 feature_names but input 'features'"),
        ({"preprocessing": preprocessing(std=[0.0] * 45)}, "cmsdl.preprocessing.std has a zero"),
        ({"preprocessing": preprocessing(mean=["x"] * 45)}, "cmsdl.preprocessing.mean must be 45 finite numbers"),
        ({"preprocessing": preprocessing(defaults={"nope": 0})}, "cmsdl.preprocessing.defaults must map"),
        ({"source": []}, "cmsdl.source must be an object"),
    ],
)
def test_every_contract_key_is_checked_and_against_the_graph(changes: dict, message: str) -> None:
    with pytest.raises(ContractError, match=re.escape(message)):
        Predictor(toy_tabular(**changes), label="up.onnx")


def test_a_model_whose_outputs_are_not_finite_is_refused_at_load() -> None:
    graph = toy_onnx.softmax_graph(45, 2)
    graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array([np.nan, 0], np.float32), "b"))
    content = toy_onnx.model_bytes(graph, toy_onnx.tabular_contract(FEATURES, ["b", "t"]))
    with pytest.raises(ContractError, match="test inference on zeros gave shape .* with NaN or inf"):
        Predictor(content, label="nan.onnx")


def test_non_finite_model_outputs_are_an_input_error_not_an_answer() -> None:
    predictor = Predictor(toy_onnx.top_model())
    with pytest.raises(InputError, match="NaN or infinite for batch item"):
        predictor.run(np.full((2, 45), 3e38, np.float32))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_headers_are_checked_before_anything_is_allocated() -> None:
    header = npy_bytes(np.zeros((2, 42), np.float32)).replace(b"(2, 42)", b"(100000000000, 42)")
    with pytest.raises(InputError, match=re.escape("declares shape [100000000000, 42]")):
        load_npy(header)
    with pytest.raises(InputError, match="plain numeric dtype"):
        load_npy(npy_bytes(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")])))
    fortran = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(load_npy(npy_bytes(fortran)), fortran)


def png(width: int, height: int, color_type: int = 6) -> bytes:
    """A PNG whose header declares width x height and whose pixel data is cut short."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    pixels = png_chunk(b"IDAT", zlib.compress(bytes(100)))
    return SIGNATURE + png_chunk(b"IHDR", ihdr) + pixels + png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (png(9000, 9000), "image #0: 4 channel(s) of 9000x9000 pixels, expected 2 of 32x32"),
        (png(20000, 20000), "image #0: Image size (400000000 pixels) exceeds limit"),
        (png(32, 32, color_type=0), "image #0: 1 channel(s) of 32x32 pixels, expected 2"),
        (b"\x89PNG\r\n", "image #0: not a readable PNG image"),
    ],
)
def test_png_size_and_mode_are_checked_from_the_header_before_decoding(image: bytes, message: str) -> None:
    """A truncated image of the wrong size is refused for its size: its pixels were never decoded."""
    predictor = Predictor(toy_onnx.image_model())
    with pytest.raises(InputError, match=re.escape(message)):
        predictor.predict_images([image])


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([5], "hits[0]: expected an object of hit lists"),
        ([{"x": 1.0, "y": 1.0, "z": 1.0}], "hits[0].x: expected a list of numbers, got float"),
        ([{"x": [1.0, 2.0], "y": [1.0], "z": [1.0]}], "hits[0]: the hit lists differ in length (x: 2, y: 1, z: 1)"),
        ([{"x": [1.0], "y": [1.0], "z": [1.0], "subdet": [2**63]}], "hits[0].subdet: ids beyond the int64 range"),
        ([{"x": [1.0], "y": [1.0], "z": [1.0], "subdet": [2**64]}], "hits[0].subdet: expected a flat list of integers"),
        ([{"x": ["a"], "y": [1.0], "z": [1.0]}], "hits[0].x: expected a flat list of numbers"),
        ([{"x": [float("nan")], "y": [1.0], "z": [1.0]}], "hits[0].x: contains NaN"),
        ([{"x": [1.0], "y": [1.0], "z": [1.0], "energy": [1.0]}], "hits[0]: unknown field(s) 'energy'"),
        ([], "hits: empty"),
    ],
)
def test_hits_are_checked_before_rendering(events: list, message: str) -> None:
    predictor = Predictor(toy_onnx.image_model())
    with pytest.raises(InputError, match=re.escape(message)):
        predictor.predict_hits(events)


def test_records_a_model_reader_cannot_take_are_an_input_error() -> None:
    names = [f"{code}|{status}" for code in ("50660", "84", "other") for status in ("good", "bad")]
    contract = toy_onnx.tabular_contract(names, ["acdc", "clone"], source={"kind": "workflow_actions"})
    predictor = Predictor(toy_onnx.model_bytes(toy_onnx.softmax_graph(6, 2), contract))
    with pytest.raises(InputError, match="records: cannot be read as 'workflow_actions' records"):
        predictor.predict_records([{"name": "w", "tasks": []}])
    with pytest.raises(InputError, match=re.escape("raw features of shape [2, 5], expected [rows, 6]")):
        predictor.scale(np.zeros((2, 5)))


SCALING = ([float(i) for i in range(45)], [0.5 + i / 10 for i in range(45)])


def standardising_models() -> dict[str, bytes]:
    """The same toy network exported the old way (scaling outside the graph, no `in_graph`) and the new way
    (Sub/Div in the graph, `in_graph: true`)."""
    contract = toy_onnx.tabular_contract(FEATURES, ["b", "t"], scaling=SCALING)
    return {"old": toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2), contract),
            "new": toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2, scaling=SCALING),
                                        toy_onnx.tabular_contract(FEATURES, ["b", "t"], scaling=SCALING,
                                                                  in_graph=True))}


def numpy_softmax_model(raw: np.ndarray) -> np.ndarray:
    """What the toy model computes from raw features, written out in numpy: standardise once, then the network."""
    graph = toy_onnx.softmax_graph(45, 2)
    weights, bias = (numpy_helper.to_array(t) for t in graph.initializer)
    logits = ((raw - np.float32(SCALING[0])) / np.float32(SCALING[1])) @ weights + bias
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("way", ["old", "new"])
def test_old_and_new_files_standardise_raw_features_exactly_once(way: str) -> None:
    """A file exported before the scaling moved into the graph still predicts the same: the predictor scales only
    where the graph does not."""
    predictor = Predictor(standardising_models()[way], label=f"{way}.onnx")
    assert predictor.contract.preprocessing_in_graph == (way == "new")
    raw = np.random.default_rng(1).normal(20, 10, size=(7, 45)).astype(np.float32)
    rows = [dict(zip(FEATURES, map(float, row))) for row in raw]
    expected = numpy_softmax_model(raw)
    np.testing.assert_allclose(predictor.predict_rows(rows).probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(predictor.predict_rows(raw).probabilities, expected, atol=1e-5)


def test_raw_features_into_a_bare_session_give_the_predictors_scores() -> None:
    """A C++-style consumer of a new file needs no preprocessing code: raw rows straight into onnxruntime."""
    import onnxruntime as ort

    model = standardising_models()["new"]
    raw = np.random.default_rng(2).normal(20, 10, size=(5, 45)).astype(np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"features": raw})[0],
                               Predictor(model).predict_rows(raw).probabilities, atol=1e-6)


def test_in_graph_must_be_a_boolean() -> None:
    contract = toy_onnx.tabular_contract(FEATURES, ["b", "t"], in_graph="yes")  # type: ignore[arg-type]
    with pytest.raises(ContractError, match=re.escape("cmsdl.preprocessing.in_graph must be true or false")):
        Predictor(toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2), contract), label="m.onnx")
