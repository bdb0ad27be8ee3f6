"""The Open Inference Protocol (KServe V2) on `cmsdl serve`, driven by the real Triton client over loopback;
Triton model repositories served as they are; Prometheus metrics; several workers."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper
from PIL import Image
from tritonclient.utils import InferenceServerException

import toy_onnx
from cmsdl.errors import ConfigError
from cmsdl.inference import Predictor
from cmsdl.serve.server import check_workers
from test_serve import Client, free_port, running

FEATURES = [f"f{i:02d}" for i in range(45)]


def int64_model() -> bytes:
    """A tabular model whose input is int64 counts (cast to float inside the graph)."""
    graph = toy_onnx.softmax_graph(45, 2)
    graph.node.insert(0, helper.make_node("Cast", ["counts"], ["features"], to=TensorProto.FLOAT))
    graph.input[0].CopyFrom(helper.make_tensor_value_info("counts", TensorProto.INT64, ["batch", 45]))
    contract = toy_onnx.tabular_contract(FEATURES, ["b", "t"])
    contract["inputs"] = [{"name": "counts", "shape": ["batch", 45], "dtype": "int64"}]
    return toy_onnx.model_bytes(graph, contract)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flat models (tabular FP32, INT64, image UINT8) and a Triton repository folder with versions 1 and 3."""
    root = tmp_path_factory.mktemp("v2") / "models"
    root.mkdir()
    toy_onnx.write(root / "top.onnx", toy_onnx.top_model())
    toy_onnx.write(root / "counts.onnx", int64_model())
    toy_onnx.write(root / "img.onnx", toy_onnx.image_model())
    for version, seed in (("1", 1), ("3", 3)):
        (root / "repo_top" / version).mkdir(parents=True)
        graph = toy_onnx.softmax_graph(45, 2, seed=seed)
        toy_onnx.write(root / "repo_top" / version / "model.onnx",
                       toy_onnx.model_bytes(graph, toy_onnx.tabular_contract(FEATURES, ["b", "t"])))
    (root / "repo_top" / "config.pbtxt").write_text(
        'name: "repo_top"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
        'input [ { name: "features" data_type: TYPE_FP32 dims: [ 45 ] } ]\n'
        'output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 2 ] } ]\n')
    (root / "broken" / "1").mkdir(parents=True)
    shutil.copy(root / "top.onnx", root / "broken" / "1" / "model.onnx")
    (root / "broken" / "config.pbtxt").write_text('name: "broken"\nmax_batch_size: { 8\n')
    (root / "other" / "1").mkdir(parents=True)
    shutil.copy(root / "top.onnx", root / "other" / "1" / "model.onnx")
    (root / "other" / "config.pbtxt").write_text('name: "other"\nplatform: "tensorflow_savedmodel"\n')
    return root


@pytest.fixture(scope="module")
def service(models: Path) -> Iterator[Client]:
    with running(models, token="t") as client:
        yield client


@pytest.fixture
def client(service: Client) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(service.base.removeprefix("http://"))


def infer(client: triton.InferenceServerClient, model: str, name: str, x: np.ndarray, datatype: str,
          binary: bool, **options) -> np.ndarray:
    tensor = triton.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = triton.InferRequestedOutput("probabilities", binary_data=binary)
    return client.infer(model, [tensor], outputs=[wanted], **options).as_numpy("probabilities")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_server_and_model_metadata_through_the_triton_client(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("top")
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 45]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert client.get_model_metadata("img")["inputs"][0] == {"name": "images", "datatype": "UINT8",
                                                             "shape": [-1, 2, 32, 32]}
    assert client.is_model_ready("top") and client.is_model_ready("top", "1")
    assert not client.is_model_ready("top", "2") and not client.is_model_ready("nope")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_triton_client_outputs_equal_the_predictor(client: triton.InferenceServerClient, models: Path,
                                                   binary: bool, batch: int) -> None:
    x = np.random.default_rng(batch).normal(size=(batch, 45)).astype(np.float32)
    expected = Predictor(models / "top.onnx").run(x).outputs
    np.testing.assert_array_equal(infer(client, "top", "features", x, "FP32", binary), expected)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_int64_and_uint8_tensors(client: triton.InferenceServerClient, models: Path, binary: bool) -> None:
    counts = np.random.default_rng(0).integers(0, 50, size=(3, 45)).astype(np.int64)
    np.testing.assert_array_equal(infer(client, "counts", "counts", counts, "INT64", binary),
                                  Predictor(models / "counts.onnx").run(counts).outputs)
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 2, 32, 32)).astype(np.uint8)
    np.testing.assert_array_equal(infer(client, "img", "images", pixels, "UINT8", binary),
                                  Predictor(models / "img.onnx").run(pixels).outputs)


def test_png_files_as_bytes_tensors(client: triton.InferenceServerClient, models: Path) -> None:
    files = [png(rgb) for rgb in np.random.default_rng(2).integers(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)]
    expected = Predictor(models / "img.onnx").predict_images(files).outputs
    got = infer(client, "img", "images", np.array(files, dtype=np.object_), "BYTES", True)
    np.testing.assert_array_equal(got, expected)


def test_the_latest_version_of_a_triton_repository_model_is_served(client: triton.InferenceServerClient,
                                                                   service: Client, models: Path) -> None:
    assert client.get_model_metadata("repo_top")["versions"] == ["3"]
    x = np.random.default_rng(3).normal(size=(4, 45)).astype(np.float32)
    expected = Predictor(models / "repo_top" / "3" / "model.onnx").run(x).outputs
    np.testing.assert_array_equal(infer(client, "repo_top", "features", x, "FP32", True, model_version="3"), expected)
    with pytest.raises(InferenceServerException, match="model 'repo_top' has no version '1'; the served version is 3"):
        infer(client, "repo_top", "features", x, "FP32", False, model_version="1")
    status, err = service.call("DELETE", "/models/repo_top", token="t")
    assert status == 409 and "repository folder repo_top/3/model.onnx" in err["error"]


def test_a_broken_config_pbtxt_is_reported_by_path_and_its_model_skipped(service: Client, models: Path) -> None:
    status, ready = service.call("GET", "/ready")
    broken = ready["invalid_files"]
    assert status == 200 and set(broken) == {"broken/config.pbtxt", "other/config.pbtxt"}
    assert broken["broken/config.pbtxt"].startswith("broken/config.pbtxt: line 2")
    assert "platform 'tensorflow_savedmodel', expected 'onnxruntime_onnx'" in broken["other/config.pbtxt"]
    assert str(models) not in json.dumps(ready)
    assert service.call("GET", "/v2/models/broken")[0] == 404


def test_a_repository_written_by_the_triton_exporter_is_served_as_it_is(tmp_path: Path) -> None:
    """`cmsdl export format=triton` writes the folder (dims without the batch axis, dynamic_batching, ...)."""
    from cmsdl.export.triton import repository_model, triton_settings, write_repository_version

    first, second = toy_onnx.top_model(), toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2, seed=7),
                                                                toy_onnx.tabular_contract(FEATURES, ["b", "t"]))
    for content in (first, second):
        write_repository_version(repository_model(str(tmp_path), "exported"), Predictor(content).contract,
                                 triton_settings({}), content, {}, lambda report: json.dumps(report).encode())
    x = np.random.default_rng(5).normal(size=(3, 45)).astype(np.float32)
    with running(tmp_path) as service:
        client = triton.InferenceServerClient(service.base.removeprefix("http://"))
        assert client.get_model_metadata("exported")["versions"] == ["2"]
        assert service.call("GET", "/ready")[1]["invalid_files"] == {}
        np.testing.assert_array_equal(infer(client, "exported", "features", x, "FP32", True),
                                      Predictor(second).run(x).outputs)


def v2_body(name: str = "features", datatype: str = "FP32", shape: list | None = None, data: object = None,
            **extra: object) -> bytes:
    tensor = {"name": name, "datatype": datatype, "shape": [1, 45] if shape is None else shape,
              "data": [0.5] * 45 if data is None else data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


INFER_TOP = "/v2/models/top/infer"
# (description, path, body, extra headers, status, the error names)
V2_CASES = [
    ("unknown model", "/v2/models/nope/infer", v2_body(), {}, 404, "unknown model 'nope'"),
    ("unknown version", "/v2/models/top/versions/7/infer", v2_body(), {}, 404, "no version '7'"),
    ("model name with a path", "/v2/models/..%2Fx/infer", v2_body(), {}, 400, "model name '../x'"),
    ("wrong datatype", INFER_TOP, v2_body(datatype="FP64"), {}, 400,
     "input 'features': datatype 'FP64', expected FP32"),
    ("wrong shape", INFER_TOP, v2_body(shape=[1, 44], data=[0.5] * 44), {}, 400,
     "input 'features': shape [1, 44], expected [-1, 45]"),
    ("data and shape disagree", INFER_TOP, v2_body(shape=[2, 45]), {}, 400, "45 values in 'data', but shape [2, 45]"),
    ("missing input", INFER_TOP, json.dumps({"inputs": []}).encode(), {}, 400,
     "input 'features': missing; this model takes 'features' FP32 [-1, 45]"),
    ("unknown input", INFER_TOP, v2_body(name="x"), {}, 400, "input 'x': unknown; this model takes 'features'"),
    ("strings as FP32", INFER_TOP, v2_body(data=["a"] * 45), {}, 400, "input 'features': expected a nested list"),
    ("floats as INT64", "/v2/models/counts/infer", v2_body(name="counts", datatype="INT64"), {}, 400,
     "input 'counts': the model takes int64"),
    ("NaN", INFER_TOP, v2_body().replace(b"0.5,", b"NaN,", 1), {}, 400, "NaN"),
    ("no inputs list", INFER_TOP, b'{"x": 1}', {}, 400, "expected a JSON object with an 'inputs' list"),
    ("malformed JSON", INFER_TOP, b'{"inputs": [', {}, 400, "request: malformed JSON"),
    ("unknown output", INFER_TOP, v2_body(outputs=[{"name": "logits"}]), {}, 400,
     "output 'logits': unknown; this model returns 'probabilities'"),
    ("parameters not an object", INFER_TOP, v2_body(parameters=[1]), {}, 400, "'parameters' must be an object"),
    ("header length beyond the body", INFER_TOP, v2_body(), {"Inference-Header-Content-Length": "999999"}, 400,
     "Inference-Header-Content-Length: 999999, but the body has only"),
    ("header length not a number", INFER_TOP, v2_body(), {"Inference-Header-Content-Length": "x"}, 400,
     "Inference-Header-Content-Length: 'x', expected a byte count"),
    ("binary size beyond the data", INFER_TOP,
     json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 45],
                             "parameters": {"binary_data_size": 180}}]}).encode() + bytes(100), {"binary": "1"}, 400,
     "binary_data_size 180, expected a byte count of at most the 100 bytes"),
    ("binary size not the shape's", INFER_TOP,
     json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 45],
                             "parameters": {"binary_data_size": 100}}]}).encode() + bytes(100), {"binary": "1"}, 400,
     "binary_data_size 100, but shape [1, 45] of FP32 takes 180 bytes"),
    ("bytes left over", INFER_TOP, v2_body() + bytes(8), {"binary": "1"}, 400, "8 bytes after the JSON header"),
    ("PNG bytes for a tabular model", INFER_TOP, v2_body(datatype="BYTES", shape=[1], data=["iVBO"]), {}, 400,
     "datatype 'BYTES', expected FP32"),
    ("not base64 PNG", "/v2/models/img/infer", v2_body(name="images", datatype="BYTES", shape=[1], data=["**"]), {},
     400, "input 'images': an element of 'data' is not base64"),
    ("BYTES element beyond the data", "/v2/models/img/infer",
     json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                             "parameters": {"binary_data_size": 8}}]}).encode() + b"\xff\x00\x00\x00abcd",
     {"binary": "1"}, 400, "BYTES element 0 declares 255 bytes, beyond the data"),
    ("no such endpoint", "/v2/models/top/explain", b"{}", {}, 404, "no endpoint /v2/models/top/explain"),
    ("shape of huge sizes", INFER_TOP, v2_body(shape=[1 << 39, 1 << 39]), {}, 400, "input 'features': shape"),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "message"), [case[1:] for case in V2_CASES],
                         ids=[case[0] for case in V2_CASES])
def test_bad_v2_requests_get_a_4xx_error_naming_the_tensor(service: Client, path: str, body: bytes,
                                                           headers: dict[str, str], status: int, message: str) -> None:
    if headers.pop("binary", None):
        header_length = body.index(b"}]}") + 3
        headers = {**headers, "Inference-Header-Content-Length": str(header_length)}
    request = urllib.request.Request(service.base + path, data=body, method="POST",
                                     headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            got_status, got = response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        got_status, got = err.code, json.loads(err.read())
    assert (got_status, message in got.get("error", "")) == (status, True), got


def test_a_body_that_arrives_in_pieces_gets_the_same_answer(service: Client) -> None:
    """The fast path answers bodies that came with the request head; a body sent later goes the framework's way."""
    body = v2_body()
    port = int(service.base.rsplit(":", 1)[1])
    head = (f"POST {INFER_TOP} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[:10])
        time.sleep(0.3)
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    whole = service.call("POST", INFER_TOP, body)[1]
    assert answer.startswith(b"HTTP/1.1 200") and json.loads(answer.split(b"\r\n\r\n", 1)[1]) == whole


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text exposition (0 if absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match[1])) == labels:
            return float(match[2])
    return 0.0


def test_metrics_count_requests_latency_and_batch_sizes_per_model_and_status(service: Client) -> None:
    before = service.call_text("GET", "/metrics")[1]
    assert service.call("POST", INFER_TOP, v2_body(shape=[2, 45], data=[0.5] * 90))[0] == 200
    assert service.call("POST", INFER_TOP, v2_body(datatype="INT8"))[0] == 400
    assert service.call("POST", "/models/top/predict", json.dumps({"inputs": [[0.5] * 45] * 3}).encode())[0] == 200
    assert service.call("POST", "/v2/models/made-up/infer", v2_body())[0] == 404
    after = service.call_text("GET", "/metrics")[1]

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("cmsdl_serve_requests_total", model="top", endpoint="infer", status="200") == 1
    assert grew("cmsdl_serve_requests_total", model="top", endpoint="infer", status="400") == 1
    assert grew("cmsdl_serve_requests_total", model="top", endpoint="predict", status="200") == 1
    assert grew("cmsdl_serve_requests_total", model="unknown", endpoint="infer", status="404") == 1
    assert grew("cmsdl_serve_request_seconds_count", model="top", endpoint="infer", status="200") == 1
    assert grew("cmsdl_serve_batch_size_sum", model="top", endpoint="infer") == 2
    assert grew("cmsdl_serve_batch_size_sum", model="top", endpoint="predict") == 3
    assert "made-up" not in after


@pytest.mark.parametrize(("workers", "read_only", "message"),
                         [(0, True, "workers=0: expected 1 or more"), (2, False, "read_only=true"),
                          (2, True, None), (1, False, None)])
def test_several_workers_need_read_only(workers: int, read_only: bool, message: str | None) -> None:
    if message is None:
        check_workers(workers, read_only)
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_workers(workers, read_only)


@pytest.mark.slow
def test_two_workers_share_the_port_and_their_metrics(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    toy_onnx.write(models / "top.onnx", toy_onnx.top_model())
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "cmsdl.cli", "serve", f"models={models}", f"port={port}",
                             "workers=2", "read_only=true"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        service = Client(f"http://127.0.0.1:{port}")
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if service.call("GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        for _ in range(40):  # each on a new connection, which the kernel hands to either worker
            assert service.call("POST", INFER_TOP, v2_body())[0] == 200
        text = service.call_text("GET", "/metrics")[1]
        assert metric(text, "cmsdl_serve_requests_total", model="top", endpoint="infer", status="200") == 40
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0].decode()
    assert "Traceback" not in output, output[-3000:]
