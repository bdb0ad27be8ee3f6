"""`cmsdl export format=triton`: a Triton model repository whose config.pbtxt the real Triton schema accepts, read
back by `read_triton_config` as protobuf itself reads it, new versions on re-export, all-or-nothing writes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format, text_format

import toy_onnx
from cmsdl.config import compose_run_config
from cmsdl.errors import ConfigError
from cmsdl.export import triton
from cmsdl.export.triton import TritonConfigError, TritonSettings, latest_version, read_triton_config
from cmsdl.inference import ModelContract, Predictor

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
FEATURES = [f"f{i:02d}" for i in range(45)]


def protobuf_dict(text: str) -> dict[str, Any]:
    """The config as Triton's own schema parses it (tritonclient's model_config_pb2 + protobuf text_format)."""
    message = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def toy_contract(dtype: str = "float32") -> tuple[ModelContract, bytes]:
    content = toy_onnx.top_model()
    return Predictor(content).contract, content


@pytest.mark.parametrize(
    ("settings", "dims", "batching"),
    [
        (TritonSettings(), [45], {"max_queue_delay_microseconds": "100"}),
        (TritonSettings(max_batch_size=0, dynamic_batching=False), ["-1", 45], None),
        (TritonSettings(max_batch_size=256, max_queue_delay_microseconds=500, instance_kind="gpu", instance_count=2,
                        gpus=[0, 1]), [45], {"max_queue_delay_microseconds": "500"}),
    ],
)
def test_the_written_config_is_valid_for_tritons_own_schema(settings: TritonSettings, dims: list,
                                                            batching: dict | None) -> None:
    contract, _ = toy_contract()
    text = triton.config_text(triton.model_config("top", contract, settings), contract)
    parsed = protobuf_dict(text)
    assert parsed["name"] == "top" and parsed["platform"] == "onnxruntime_onnx"
    assert parsed.get("max_batch_size", 0) == settings.max_batch_size
    assert parsed["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [str(d) for d in dims]}]
    assert parsed["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32",
                                 "dims": [str(d) for d in dims[:-1]] + ["2"]}]
    assert parsed.get("dynamic_batching") == batching
    group = parsed["instance_group"][0]
    assert group["kind"] == f"KIND_{settings.instance_kind.upper()}" and group.get("count", 0) == settings.instance_count
    assert group.get("gpus", []) == settings.gpus
    assert parsed["version_policy"] == {"latest": {"num_versions": 1}}


TRITON_STYLE = """
# an ensemble of the spellings Triton's documentation and users write
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 8
input [
  {
    name: "data_0",
    data_type: TYPE_FP32,
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
    reshape { shape: [ 1, 3, 224, 224 ] }
  }
]
output {
  name: "fc6_1"
  data_type: 11
  dims: [ 1000 ]
  label_filename: "densenet" "_labels.txt"
}
output < name: 'prob' data_type: TYPE_FP16 dims: 1000 dims: 1 >
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] }, { kind: KIND_CPU } ];
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 0x64 }
parameters { key: "note" value: { string_value: "tab\\there \\"quoted\\"" } }
parameters: { key: "x" value { string_value: "y" } }
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] } }
"""


def ints(value: Any) -> Any:
    """protobuf's JSON writes 64-bit integers as strings: back to ints, everywhere."""
    if isinstance(value, dict):
        return {k: ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ints(v) for v in value]
    return int(value) if isinstance(value, str) and re.fullmatch(r"-?\d+", value) else value


def test_the_reader_agrees_with_protobufs_parser_on_tritons_spellings(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(TRITON_STYLE)
    ours, theirs = read_triton_config(path), ints(protobuf_dict(TRITON_STYLE))
    for key in ("name", "platform", "max_batch_size", "input", "output", "dynamic_batching", "optimization"):
        assert ours[key] == theirs[key], key
    assert ours["instance_group"] == [{"count": 2, "kind": "KIND_GPU", "gpus": [0]}, {"kind": "KIND_CPU"}]
    assert theirs["instance_group"] == [{"count": 2, "kind": "KIND_GPU", "gpus": [0]}, {"kind": "KIND_CPU"}]
    entries = {p["key"]: p["value"] for p in ours["parameters"]}
    assert entries == theirs["parameters"] == {"note": {"string_value": 'tab\there "quoted"'},
                                               "x": {"string_value": "y"}}


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nbackend: "onnxruntime"\n')
    assert read_triton_config(path) == {"name": "m", "backend": "onnxruntime", "max_batch_size": 0, "input": [],
                                        "output": []}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'name: "m"\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] }\n', "line 3, column 1: expected ',' or ']'"
                                                                                 ", found the end of the file"),
        (b'name "m"', "line 1, column 6: expected ':', '{' or '['"),
        (b"max_batch_size: 8\ninputs [ ]", "unknown field 'inputs' (did you mean 'input'?)"),
        (b"max_batch_size: -1", "max_batch_size must be an integer >= 0, got -1"),
        (b'input { name: "x" dims: [ 3 ] }', "input[0]: missing data_type"),
        (b'output { name: "y" data_type: TYPE_FLOAT dims: 3 }', "output[0].data_type: got 'TYPE_FLOAT', expected one"),
        (b'input { name: "x" data_type: TYPE_FP32 dims: [ 3.5 ] }', "expected a data type and dims of sizes or -1"),
        (b"instance_group [ { kind: KIND_TPU } ]", "instance_group[0].kind: got 'KIND_TPU'"),
        (b"dynamic_batching: 5", "dynamic_batching must be a message"),
        (b'name: "\xff"', "not UTF-8 text (byte 7)"),
        (b'name: "a\\q"', "line 1, column 7: invalid escape \\q"),
        (b"a {" * 50, "messages nested more than 32 deep"),
        (b"name: @", "line 1, column 7: unexpected character '@'"),
    ],
)
def test_a_broken_config_is_one_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m" / "config.pbtxt"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(TritonConfigError) as caught:
        read_triton_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_an_unreadable_or_huge_config_is_named_too(tmp_path: Path) -> None:
    with pytest.raises(TritonConfigError, match=re.escape(f"{tmp_path / 'nope.pbtxt'}: cannot be read")):
        read_triton_config(tmp_path / "nope.pbtxt")
    huge = tmp_path / "huge.pbtxt"
    huge.write_bytes(b"#" * (2 << 20))
    with pytest.raises(TritonConfigError, match="larger than 1048576 bytes"):
        read_triton_config(huge)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": -1}, "triton.max_batch_size: got -1, expected an integer >= 0"),
        ({"max_batch_size": 0}, "triton.dynamic_batching: Triton batches requests only for a model with max_batch"),
        ({"max_queue_delay_microseconds": 1.5}, "triton.max_queue_delay_microseconds: got 1.5"),
        ({"dynamic_batching": "yes"}, "triton.dynamic_batching: got 'yes', expected true or false"),
        ({"instance_group": {"kind": "tpu"}}, "triton.instance_group.kind: got 'tpu', expected cpu or gpu"),
        ({"instance_group": {"count": 0}}, "triton.instance_group.count: got 0, expected an integer >= 1"),
        ({"instance_group": {"gpus": [0]}}, "triton.instance_group.gpus: got [0], but GPUs apply to kind=gpu only"),
        ({"instance_group": {"kind": "gpu", "gpus": [-1]}}, "triton.instance_group.gpus: got [-1]"),
        ({"instance_group": "gpu"}, "triton.instance_group: got 'gpu', expected {kind: cpu|gpu"),
    ],
)
def test_triton_settings_are_checked_key_by_key(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        triton.triton_settings(options)


def test_latest_version_is_the_highest_numbered_one_with_a_model(tmp_path: Path) -> None:
    for version in ("1", "2", "10", "11", "notes", "0"):
        (tmp_path / version).mkdir()
    for version in ("1", "2", "10", "notes", "0"):
        (tmp_path / version / "model.onnx").write_bytes(b"m")
    assert triton.versions(tmp_path) == [1, 2, 10, 11]
    assert latest_version(tmp_path) == (10, tmp_path / "10" / "model.onnx"), "11 is still being written"
    assert latest_version(tmp_path / "missing") is None


def write_toy_version(repo: Path, name: str = "top", content: bytes | None = None,
                      settings: TritonSettings = TritonSettings()) -> dict[str, Any]:
    content = content or toy_onnx.top_model()
    contract = Predictor(content).contract
    target = triton.repository_model(str(repo), name)
    return triton.write_repository_version(target, contract, settings, content, {"parity": "ok"},
                                           lambda report: json.dumps(report).encode())


def test_re_export_adds_the_next_version_and_rewrites_the_config(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = write_toy_version(repo)
    second = write_toy_version(repo, settings=TritonSettings(max_queue_delay_microseconds=250))
    assert first["triton"]["version"] == 1 and second["triton"]["version"] == 2
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == [
        "top", "top/1", "top/1/export.json", "top/1/model.onnx", "top/2", "top/2/export.json", "top/2/model.onnx",
        "top/config.pbtxt"]
    config = read_triton_config(repo / "top" / "config.pbtxt")
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 250}
    assert latest_version(repo / "top") == (2, repo / "top" / "2" / "model.onnx")
    report = json.loads((repo / "top" / "2" / "export.json").read_text())
    assert report["model"] == str(repo / "top" / "2" / "model.onnx") and report["parity"] == "ok"
    assert Predictor(repo / "top" / "2" / "model.onnx").contract.class_names == ["background", "top"]


def test_a_version_with_other_tensors_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_toy_version(repo)
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=re.escape(f"{repo / 'top' / 'config.pbtxt'}: declares input 'features' "
                                                    "TYPE_FP32 [-1, 45], the new model has 'features' TYPE_FP32 "
                                                    "[-1, 44]; every version of a model shares its config")):
        write_toy_version(repo, content=toy_onnx.top_model(n_features=44))
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert triton.versions(repo / "top") == [1]


def test_a_failed_write_leaves_no_version_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(files: dict) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(triton, "write_files_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_toy_version(tmp_path / "repo")
    assert triton.versions(tmp_path / "repo" / "top") == []
    assert [p.name for p in (tmp_path / "repo" / "top").iterdir()] == []


def test_a_broken_existing_config_is_reported_before_any_work(tmp_path: Path) -> None:
    config = tmp_path / "repo" / "top" / "config.pbtxt"
    config.parent.mkdir(parents=True)
    config.write_text("max_batch_size: [")
    with pytest.raises(TritonConfigError, match=re.escape(f"{config}: line 1, column 18: expected")):
        triton.repository_model(str(tmp_path / "repo"), "top")
    assert config.read_text() == "max_batch_size: ["


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "", None, "x" * 200])
def test_model_names_are_single_directory_names(name: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"name: got {name!r}, expected a model name")):
        triton.repository_model(str(tmp_path), name)


@pytest.mark.slow
def test_export_writes_a_triton_repository_version_per_run(tmp_path: Path, trained_checkpoint: Path) -> None:
    """The trained workflow model, twice into one repository: versions 1 and 2 with the contract inside."""
    from cmsdl.export.exporter import export

    repo = tmp_path / "repo"
    overrides = [f"ckpt={trained_checkpoint}", "format=triton", f"repo={repo}", "name=wf",
                 "triton.instance_group.kind=gpu", "triton.max_queue_delay_microseconds=300"]
    first = export(compose_run_config("export", overrides))
    second = export(compose_run_config("export", overrides))
    assert (first["triton"]["version"], second["triton"]["version"]) == (1, 2)
    assert max(second["parity"]["max_abs_diff"].values()) <= 1e-4
    text = (repo / "wf" / "config.pbtxt").read_text()
    parsed = protobuf_dict(text)
    n = len(Predictor(repo / "wf" / "2" / "model.onnx").contract.preprocessing["feature_names"])
    assert parsed["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [str(n)]}]
    assert parsed["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    assert read_triton_config(repo / "wf" / "config.pbtxt")["dynamic_batching"] == {
        "max_queue_delay_microseconds": 300}
    predictor = Predictor(repo / "wf" / "2" / "model.onnx")
    assert predictor.contract.preprocessing_in_graph and predictor.contract.class_names == ["acdc", "clone"]
    rows = np.random.default_rng(0).uniform(0, 3, size=(3, n))
    assert np.isfinite(predictor.predict_rows(rows).probabilities).all()
    assert not (tmp_path / "model.onnx").exists() and not list(Path.cwd().glob("model.export.json"))


@pytest.mark.parametrize(("option", "message"), [("quantize=true", "quantize=true: a Triton model version holds one"),
                                                 ("fp16=true", "fp16=true: a Triton model version holds one"),
                                                 ("repo=null", "repo: got None, expected the model repository"),
                                                 ("format=tflite", "format: got 'tflite', expected one of onnx, "
                                                                   "triton")])
def test_triton_options_fail_before_any_work(option: str, message: str, tmp_path: Path) -> None:
    from cmsdl.export.exporter import export

    cfg = compose_run_config("export", [f"ckpt={tmp_path / 'missing.ckpt'}", "format=triton", f"repo={tmp_path / 'r'}",
                                        option])
    with pytest.raises(ConfigError, match=re.escape(message)):
        export(cfg)
    assert not list(tmp_path.iterdir())


def test_a_file_system_failure_while_writing_is_one_line(tmp_path: Path) -> None:
    from cmsdl.errors import CmsdlError
    from cmsdl.export.exporter import written

    def read_only(*args: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "repo" / "wf"))

    with pytest.raises(CmsdlError, match=re.escape(f"export: cannot write {tmp_path / 'repo' / 'wf'} (Permission "
                                                   "denied); nothing written")):
        written("repo/wf/<next version>", read_only)
