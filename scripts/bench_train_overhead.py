"""Training overhead: the same MLP on the same data, by a raw PyTorch loop and by `cmsdl train`, side by side.

Both train `--epochs` epochs on the same training split of simulated workflows (and run one validation pass
per epoch), from the same initial weights, single process, on the CPU (or `--device cuda`). cmsdl runs with
its default callbacks and logger (checkpoints, early stopping, progress bar, CSV metrics).
Prints samples/s for both and their ratio.

    python scripts/bench_train_overhead.py [--workflows 20000] [--epochs 10] [--batch-size 256] [override ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cmsdl.config import compose_run_config
from cmsdl.sim.workflows import simulate_workflows
from cmsdl.train import build


def raw_loop(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
             epochs: int, batch_size: int, lr: float, device: str) -> float:
    """Plain PyTorch: shuffle, slice batches, Adam step, one no-grad validation pass per epoch; seconds taken."""
    net = net.to(device)
    x, y, xv, yv = x.to(device), y.float().to(device), xv.to(device), yv.float().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for rows in torch.randperm(len(y), device=device).split(batch_size):
            loss = F.binary_cross_entropy_with_logits(net(x[rows]).reshape(-1), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            F.binary_cross_entropy_with_logits(net(xv).reshape(-1), yv).item()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("overrides", nargs="*", help="extra `cmsdl train` overrides, e.g. callbacks=none")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "workflows.json"
        data.write_text(json.dumps(simulate_workflows(args.workflows, seed=11)))
        cfg = compose_run_config("train", [
            "experiment=workflow_actions", f"data.source.path={data}", f"data.batch_size={args.batch_size}",
            f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}", f"trainer.max_epochs={args.epochs}",
            f"trainer.min_epochs={args.epochs}", "callbacks.early_stopping.patience=100000", f"paths.log_dir={tmp}",
            *args.overrides,
        ], output_dir=Path(tmp) / "run")
        datamodule, model, trainer = build(cfg)
        train, val = datamodule.splits["train"], datamodule.splits["val"]
        initial = copy.deepcopy(model.net)

        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        cmsdl_s = time.perf_counter() - start
        raw_s = raw_loop(initial, train.features, train.labels, val.features, val.labels, args.epochs,
                         args.batch_size, cfg.model.optimizer.lr, args.device)

    samples = args.epochs * len(train)
    raw_rate, cmsdl_rate = samples / raw_s, samples / cmsdl_s
    print(f"\nMLP 5x75 on {len(train)} training workflows x {train.features.shape[1]} features, "
          f"batch {args.batch_size}, {args.epochs} epochs, {args.device}, {torch.get_num_threads()} threads")
    print(f"{'':12}{'seconds':>10}{'samples/s':>14}")
    print(f"{'raw PyTorch':12}{raw_s:>10.2f}{raw_rate:>14,.0f}")
    print(f"{'cmsdl train':12}{cmsdl_s:>10.2f}{cmsdl_rate:>14,.0f}")
    print(f"ratio cmsdl/raw samples/s: {cmsdl_rate / raw_rate:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"raw_samples_per_s": raw_rate, "cmsdl_samples_per_s": cmsdl_rate,
                                         "ratio": cmsdl_rate / raw_rate, **vars(args) | {"json": None}}, indent=2))


if __name__ == "__main__":
    main()
