"""REST service throughput: requests/s and p50/p99 latency with concurrent clients on loopback, JSON vs .npy.

Starts `cmsdl serve` in-process (uvicorn, one worker) on a free port with an exported model (the seed's
workflow MLP, trained briefly here unless --model is given), then runs the same requests with a JSON body
({"inputs": [[...]]}) and with a binary .npy body, side by side. Prints the ratio npy / JSON requests/s.

    python scripts/bench_serve.py [--clients 8] [--requests 300] [--batch 64] [--model model.onnx]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import uvicorn

from cmsdl.inference import Predictor
from cmsdl.serve.app import create_app


def exported_mlp(work: Path) -> Path:
    """Simulate workflows, train the seed DNN for one epoch and export it (the same commands a user runs)."""
    cmsdl = [sys.executable, "-m", "cmsdl.cli"]
    quiet = {"check": True, "capture_output": True, "cwd": work}
    subprocess.run([*cmsdl, "simulate-workflows", "out=data/workflows.json", "n_workflows=800"], **quiet)
    subprocess.run([*cmsdl, "train", "experiment=workflow_actions", "trainer.max_epochs=1", "run_name=bench",
                    "trainer=cpu", "callbacks.progress_bar.refresh_rate=0"], **quiet)
    best = json.loads((work / "logs/train/runs/bench/metrics.json").read_text())["best_checkpoint"]
    subprocess.run([*cmsdl, "export", f"ckpt={best}", "out=models/mlp.onnx"], **quiet)
    return work / "models" / "mlp.onnx"


def serve(models: Path) -> tuple[uvicorn.Server, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(str(models)), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def client(port: int, path: str, body: bytes, content_type: str, n: int) -> list[float]:
    """One keep-alive connection sending n requests; latencies in ms."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        connection.request("POST", path, body, {"content-type": content_type})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        latencies.append((time.perf_counter() - start) * 1e3)
    connection.close()
    return latencies


def load(port: int, name: str, body: bytes, content_type: str, clients: int, requests: int) -> dict[str, float]:
    path = f"/models/{name}/predict"
    client(port, path, body, content_type, 5)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: client(port, path, body, content_type, requests // clients), range(clients)))
    elapsed = time.perf_counter() - start
    latencies = sorted(t for r in results for t in r)
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(0.99 * (len(latencies) - 1))], "body_bytes": len(body)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model", type=Path, help="an exported .onnx model (default: train and export the MLP)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or exported_mlp(Path(tmp))
        shape = Predictor(model).contract.input.shape
        x = np.random.default_rng(0).normal(size=(args.batch, *shape[1:])).astype(np.float32)
        npy = io.BytesIO()
        np.save(npy, x)
        server, port = serve(model.parent)
        rows = {
            "json": load(port, model.stem, json.dumps({"inputs": x.tolist()}).encode(), "application/json",
                         args.clients, args.requests),
            "npy": load(port, model.stem, npy.getvalue(), "application/x-npy", args.clients, args.requests),
        }
        server.should_exit = True
    print(f"{args.clients} clients, batch {args.batch} x {shape[1:]}, {args.requests} requests per payload kind")
    print(f"{'payload':<8}{'body bytes':>12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for kind, row in rows.items():
        print(f"{kind:<8}{row['body_bytes']:>12}{row['requests_per_s']:>10.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}")
    print(f"ratio npy/json requests/s: {rows['npy']['requests_per_s'] / rows['json']['requests_per_s']:.2f}")


if __name__ == "__main__":
    main()
