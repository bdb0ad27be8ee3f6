"""Issue 16 item 9b on built-in data: k-means stability with and without history, DNN AUC per balance and SVD.

    .venv/bin/python scripts/workflow_history_study.py --out logs/wf_history [--weeks 10] [--histories 1 4]
        [--seeds 1 2 3] [--components 8]

Simulates (once, into `<out>/`) weekly snapshots (`cmsdl simulate-workflows snapshots=<weeks>`) and the default
workflow file (`cmsdl simulate-workflows`), then runs `cmsdl cluster-workflows input=<snapshots> history=<h>` per
history and `scripts/seed_repeats.py workflows` per (data.balance, data.source.matrix.svd_components); prints both
tables and writes `<out>/study.json`. Runs whose outputs exist are read, not rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_repeats import main as seed_repeats  # noqa: E402
from seed_repeats import run_cmsdl  # noqa: E402

BALANCES = ("none", "weights", "oversample")


def stability_by_history(out: Path, weeks: int, histories: list[int]) -> dict[int, dict[str, float]]:
    """Mean ARI and matched share between consecutive weekly fits, per history length."""
    snapshots = out / "snapshots"
    if not snapshots.is_dir():
        run_cmsdl("simulate-workflows", f"out={snapshots}", f"snapshots={weeks}")
    result = {}
    for history in histories:
        clusters = out / f"clusters_history{history}"
        if not (clusters / "stability.json").is_file():
            run_cmsdl("cluster-workflows", f"input={snapshots}", f"history={history}", f"out={clusters}")
        fits = json.loads((clusters / "stability.json").read_text())["fits"]
        pairs = [f for f in fits if f.get("ari") is not None]
        result[history] = {"mean_ari": float(np.mean([f["ari"] for f in pairs])),
                           "min_ari": float(np.min([f["ari"] for f in pairs])),
                           "mean_matched_share": float(np.mean([f["matched_share"] for f in pairs])),
                           "k": [f["k"] for f in fits]}
    return result


def auc_by_setting(out: Path, seeds: list[int], components: int) -> dict[str, dict[str, Any]]:
    """Test AUC (mean and std over training seeds) of the seed's DNN per balance, without and with SVD."""
    data = out / "workflows.json"
    if not data.is_file():
        run_cmsdl("simulate-workflows", f"out={data}")
    result = {}
    for svd in (None, components):
        for balance in BALANCES:
            name = f"balance={balance} svd={svd or 'off'}"
            overrides = [f"data.balance={balance}"] + ([f"data.source.matrix.svd_components={svd}"] if svd else [])
            run = out / "dnn" / f"{balance}_svd{svd or 0}"
            report = seed_repeats(["workflows", "--input", str(data), "--out", str(run),
                                   "--seeds", *map(str, seeds), "--", *overrides])
            result[name] = report["models"]["dnn"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weeks", type=int, default=10)
    parser.add_argument("--histories", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--components", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stability = stability_by_history(args.out, args.weeks, args.histories)
    auc = auc_by_setting(args.out, args.seeds, args.components)
    (args.out / "study.json").write_text(json.dumps({"stability": stability, "auc": auc}, indent=2) + "\n")
    print("history  mean ARI  min ARI  matched share  k per fit")
    for history, s in stability.items():
        print(f"{history:>7}  {s['mean_ari']:8.3f}  {s['min_ari']:7.3f}  {s['mean_matched_share']:13.3f}  {s['k']}")
    print("setting                         test AUC (mean ± std over seeds)")
    for name, s in auc.items():
        print(f"{name:<31} {s['auc']:.3f} ± {s['std_seeds']:.3f}  {s['per_seed']}")


if __name__ == "__main__":
    main()
