"""`cmsdl serve` over real HTTP on loopback: answers, 4xx for each bad request, keeps serving, atomic uploads."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from cmsdl.serve.app import create_app

TOKEN = "s3cret"


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
             token: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        request.add_header("content-type", content_type)
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def predict(self, name: str, doc: dict) -> tuple[int, dict]:
        return self.call("POST", f"/models/{name}/predict", json.dumps(doc).encode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def service(tmp_path: Path, exported_model: Path) -> Iterator[Client]:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(exported_model, models / "wf.onnx")
    (models / "junk.onnx").write_bytes(b"not a model")
    port = free_port()
    app = create_app(str(models), token=TOKEN, max_body_bytes=300_000, threads=1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield Client(f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=10)


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
