"""`cmsdl serve` over real HTTP on loopback: answers, 4xx for each bad request, keeps serving, atomic uploads."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import threading
import time
from contextlib import contextmanager
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

import toy_onnx
from cmsdl.errors import ConfigError
from cmsdl.serve.app import create_app
from cmsdl.serve.bodies import Limits
from cmsdl.serve.server import check_write_access
from cmsdl.serve.store import ModelStore

TOKEN = "s3cret"


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
             token: str | None = None) -> tuple[int, dict]:
        status, text = self.call_text(method, path, body, content_type, token)
        return status, json.loads(text)

    def call_text(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
                  token: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        request.add_header("content-type", content_type)
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def predict(self, name: str, doc: dict) -> tuple[int, dict]:
        return self.call("POST", f"/models/{name}/predict", json.dumps(doc).encode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    return server, thread, port


@contextmanager
def running(models: Path, **settings) -> Iterator[Client]:
    """The service for `models` on a free loopback port, stopped afterwards."""
    server, thread, port = start(create_app(str(models), threads=1, **settings))
    try:
        yield Client(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def models_dir(tmp_path: Path, exported_model: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(exported_model, models / "wf.onnx")
    (models / "junk.onnx").write_bytes(b"not a model")
    return models


@pytest.fixture
def service(models_dir: Path) -> Iterator[Client]:
    with running(models_dir, token=TOKEN, limits=Limits(json_bytes=300_000)) as client:
        yield client


def test_lists_and_describes_models_and_reports_health(service: Client) -> None:
    assert service.call("GET", "/health") == (200, {"status": "ok"})
    status, ready = service.call("GET", "/ready")
    assert status == 200 and ready["models"] == 1 and "junk.onnx" in ready["invalid_files"]
    status, listing = service.call("GET", "/models")
    assert status == 200 and [m["name"] for m in listing["models"]] == ["wf"]
    status, meta = service.call("GET", "/models/wf")
    assert status == 200 and meta["cmsdl.class_names"] == ["acdc", "clone"]
    assert meta["cmsdl.preprocessing"]["kind"] == "tabular"


def test_predicts_from_rows_records_tensors_and_npy(service: Client, exported_model: Path) -> None:
    _, meta = service.call("GET", "/models/wf")
    n = meta["cmsdl.inputs"][0]["shape"][1]
    # feature rows hold the source's features before standardisation: log1p(failed jobs) for workflows
    status, by_rows = service.predict("wf", {"rows": [{"50660|good": float(np.log1p(5))}, {"84|bad": 2.0}]})
    assert status == 200 and len(by_rows["labels"]) == 2 and len(by_rows["probabilities"][0]) == 2
    record = {"name": "wf1", "tasks": [{"errors": {"50660": {"T1_US_FNAL": 5}}, "site_status": {}}]}
    status, by_record = service.predict("wf", {"records": [record]})
    assert status == 200
    np.testing.assert_allclose(by_record["probabilities"][0], by_rows["probabilities"][0], atol=1e-6)
    x = np.random.default_rng(0).normal(size=(5, n)).astype(np.float32)
    status, by_json = service.predict("wf", {"inputs": x.tolist()})
    buffer = io.BytesIO()
    np.save(buffer, x)
    status_npy, by_npy = service.call("POST", "/models/wf/predict", buffer.getvalue(), "application/x-npy")
    assert status == status_npy == 200
    np.testing.assert_allclose(by_json["probabilities"], by_npy["probabilities"], atol=1e-6)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "message"),
    [
        ("POST", "/models/nope/predict", b'{"rows": []}', "application/json", 404, "unknown model 'nope'"),
        ("POST", "/models/wf/predict", b'{"inputs": [[1, 2]]}', "application/json", 422, "shape [1, 2], expected"),
        ("POST", "/models/wf/predict", npy(np.zeros((2, 3), np.float64)), "application/x-npy", 422, "dtype float64"),
        ("POST", "/models/wf/predict", b"{not json", "application/json", 400, "malformed JSON"),
        ("POST", "/models/wf/predict", b'{"rows": 1}', "application/json", 400, "exactly one list"),
        ("POST", "/models/wf/predict", b"\x93NUMPY garbage", "application/x-npy", 422, "not a .npy array"),
        ("POST", "/models/wf/predict", b'{"images": ["a"]}', "application/json", 422, "tabular model"),
        ("POST", "/models/wf/predict", b"x" * 400_000, "application/json", 413, "over the limit"),
        ("POST", "/models/wf/predict", b"a,b", "text/csv", 415, "content type 'text/csv'"),
        ("GET", "/models/..%2Fx", None, "application/json", 400, "model name '../x'"),
        ("PUT", "/models/new", b"onnx", "application/octet-stream", 401, "Bearer <token>"),
        ("DELETE", "/models/wf", None, "application/json", 401, "Bearer <token>"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_service_keeps_serving(
        service: Client, method: str, path: str, body: bytes | None, content_type: str, status: int,
        message: str) -> None:
    got_status, got = service.call(method, path, body, content_type)
    assert got_status == status and message in got["error"]
    assert service.predict("wf", {"rows": [{"50660|good": 1.0}]})[0] == 200


def test_invalid_upload_never_replaces_a_good_model(service: Client, exported_model: Path) -> None:
    before = service.predict("wf", {"rows": [{"50660|good": 3.0}]})[1]
    status, err = service.call("PUT", "/models/wf", b"garbage", "application/octet-stream", token=TOKEN)
    assert status == 422 and "served model is unchanged" in err["error"] and "/tmp" not in err["error"]
    assert service.predict("wf", {"rows": [{"50660|good": 3.0}]})[1] == before


def test_upload_replace_and_delete_with_the_token(service: Client, exported_model: Path) -> None:
    content = exported_model.read_bytes()
    assert service.call("PUT", "/models/second", content, "application/octet-stream", token=TOKEN)[0] == 201
    assert service.call("PUT", "/models/second", content, "application/octet-stream", token=TOKEN)[0] == 200
    assert service.predict("second", {"rows": [{"84|good": 1.0}]})[0] == 200
    assert service.call("DELETE", "/models/second", token=TOKEN) == (200, {"deleted": "second"})
    assert service.predict("second", {"rows": [{"84|good": 1.0}]})[0] == 404


def test_base64_images_are_decoded_for_image_models_only(service: Client) -> None:
    png = base64.b64encode(b"\x89PNG\r\n").decode()
    status, err = service.predict("wf", {"images": [png]})
    assert status == 422 and "tabular model" in err["error"]


def test_a_row_must_name_every_feature_without_a_declared_default(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    toy_onnx.write(models / "top.onnx", toy_onnx.top_model(defaults={"f44": 0.0}))
    row = {f"f{i:02d}": 1.0 for i in range(44)}
    with running(models) as service:
        status, err = service.predict("top", {"rows": [{"f00": 50.0}]})
        assert status == 422 and "missing 43 of the model's 45 features: 'f01', 'f02'" in err["error"]
        assert "'f44'" not in err["error"]
        assert service.predict("top", {"rows": [row]})[0] == 200
        with_default = service.predict("top", {"rows": [row | {"f44": 0.0}]})[1]
        assert service.predict("top", {"rows": [row]})[1]["probabilities"] == with_default["probabilities"]


def test_the_workflow_model_declares_exit_code_counts_default_to_0(exported_model: Path) -> None:
    from cmsdl.inference import Predictor

    contract = Predictor(exported_model).contract
    names = contract.preprocessing["feature_names"]
    assert contract.preprocessing["defaults"] == dict.fromkeys(names, 0.0)


def test_an_upload_that_fails_validation_installs_nothing(service: Client, models_dir: Path) -> None:
    """cmsdl.preprocessing="[]" once answered 500 and was installed, after which GET /models was 500 for all."""
    features = [f"f{i:02d}" for i in range(45)]
    contract = toy_onnx.tabular_contract(features, ["b", "t"]) | {"preprocessing": []}
    content = toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2), contract)
    status, err = service.call("PUT", "/models/broken", content, "application/octet-stream", token=TOKEN)
    assert status == 422 and "cmsdl.preprocessing must be an object" in err["error"]
    assert not (models_dir / "broken.onnx").exists() and not list(models_dir.glob(".*")), "no temporary file is left"
    assert service.call("GET", "/models")[0] == 200


def test_an_upload_is_0644_whatever_the_umask_and_replaces_the_old_model(tmp_path: Path) -> None:
    """The service user may differ from the uploader: an upload is world-readable even under umask 077."""
    store = ModelStore(tmp_path)
    store.load_all()
    old_umask = os.umask(0o077)
    try:
        first = store.put("top", toy_onnx.top_model())
        second = store.put("top", toy_onnx.top_model())
    finally:
        os.umask(old_umask)
    assert (first[1], second[1]) == (False, True) and store.get("top") is second[0]
    assert (tmp_path / "top.onnx").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["top.onnx"], "no temporary file is left"


def test_a_model_whose_graph_cannot_run_is_refused_before_the_swap(service: Client, models_dir: Path) -> None:
    graph = toy_onnx.softmax_graph(45, 2)
    graph.node[0].input[1] = "missing_weights"  # a MatMul on a tensor nobody defines: the session cannot run
    content = toy_onnx.model_bytes(graph, toy_onnx.tabular_contract([f"f{i:02d}" for i in range(45)], ["b", "t"]))
    status, err = service.call("PUT", "/models/wf", content, "application/octet-stream", token=TOKEN)
    assert status == 422 and "served model is unchanged" in err["error"]
    assert (models_dir / "wf.onnx").read_bytes() != content


def test_uploads_are_world_readable_and_errors_never_name_the_models_directory(service: Client,
                                                                              models_dir: Path) -> None:
    content = toy_onnx.top_model()
    assert service.call("PUT", "/models/top", content, "application/octet-stream", token=TOKEN)[0] == 201
    assert (models_dir / "top.onnx").stat().st_mode & 0o777 == 0o644
    answers = [service.call_text("GET", "/ready")[1],
               service.call_text("PUT", "/models/x", b"garbage", "application/octet-stream", token=TOKEN)[1],
               service.call_text("PUT", "/models/x", content[:200], "application/octet-stream", token=TOKEN)[1]]
    for text in answers:
        assert str(models_dir) not in text and str(models_dir.resolve()) not in text


def test_read_only_service_refuses_uploads_and_deletions(models_dir: Path, exported_model: Path) -> None:
    with running(models_dir, read_only=True) as service:
        status, err = service.call("PUT", "/models/new", exported_model.read_bytes(), "application/octet-stream")
        assert status == 403 and "read_only=true" in err["error"]
        assert service.call("DELETE", "/models/wf")[0] == 403
        assert service.predict("wf", {"rows": [{"50660|good": 1.0}]})[0] == 200


@pytest.mark.parametrize(
    ("host", "token", "read_only", "message"),
    [
        ("0.0.0.0", None, False, "host=0.0.0.0: uploads and deletions"),
        ("::", None, False, "host=::: uploads and deletions"),
        ("10.1.2.3", None, False, "set a token"),
        ("127.0.0.1", "", False, "token: empty"),
        ("0.0.0.0", "  ", True, "token: empty"),
        ("0.0.0.0", None, True, None),
        ("0.0.0.0", "secret", False, None),
        ("127.0.0.1", None, False, None),
        ("localhost", None, False, None),
        ("::1", None, False, None),
    ],
)
def test_writes_need_a_token_beyond_loopback(host: str, token: str | None, read_only: bool,
                                             message: str | None) -> None:
    if message is None:
        check_write_access(host, token, read_only)
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_write_access(host, token, read_only)


@pytest.mark.parametrize(
    ("token", "args", "message"),
    [("", [], "token: empty"), (None, ["host=0.0.0.0"], "host=0.0.0.0: uploads and deletions (PUT/DELETE)")],
)
def test_serve_refuses_open_writes_and_empty_tokens_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                token: str | None, args: list[str],
                                                                message: str) -> None:
    from conftest import run_cmsdl

    monkeypatch.delenv("CMSDL_SERVE_TOKEN", raising=False)
    if token is not None:
        monkeypatch.setenv("CMSDL_SERVE_TOKEN", token)
    proc = run_cmsdl("serve", f"models={tmp_path}", "port=1", *args, cwd=tmp_path, check=False, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1].startswith("error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
