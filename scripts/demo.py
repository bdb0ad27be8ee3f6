"""`make demo`: the main job on built-in synthetic data, end to end, then a short summary table.

simulate-workflows → train experiment=workflow_actions → eval → cluster-workflows, all under ./demo/.
Each step is the `cmsdl` command a user would type; the commands are printed as they run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path("demo")
CMSDL = [sys.executable, "-m", "cmsdl.cli"]


def run(*args: str) -> float:
    """Run one cmsdl command, echoing it; returns the seconds it took."""
    print(f"\n$ cmsdl {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([*CMSDL, *args], check=True)
    return time.perf_counter() - start


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    data = DEMO / "data" / "workflows.json"
    timings = {
        "simulate-workflows": run("simulate-workflows", f"out={data}", "n_workflows=4000", "seed=7"),
        "train": run("train", "experiment=workflow_actions", f"paths.data_dir={DEMO / 'data'}",
                     f"paths.log_dir={DEMO / 'logs'}", "run_name=workflow_actions", "trainer=cpu",
                     "callbacks.progress_bar.refresh_rate=0"),
    }
    run_dir = DEMO / "logs" / "train" / "runs" / "workflow_actions"
    trained = json.loads((run_dir / "metrics.json").read_text())
    timings["eval"] = run("eval", f"ckpt={trained['best_checkpoint']}", f"paths.log_dir={DEMO / 'logs'}",
                          "run_name=workflow_actions")
    timings["cluster-workflows"] = run("cluster-workflows", f"input={data}", f"out={DEMO / 'clusters'}")
    evaluated = json.loads((DEMO / "logs" / "eval" / "runs" / "workflow_actions" / "metrics.json").read_text())
    clusters = json.loads((DEMO / "clusters" / "clusters.json").read_text())
    print_summary(trained, evaluated, clusters, timings)


def print_summary(trained: dict, evaluated: dict, clusters: dict, timings: dict[str, float]) -> None:
    m = trained["metrics"]
    rows = [
        ("workflows simulated", f"{clusters['n_workflows']} (features per workflow: {clusters['n_features']})"),
        ("DNN (5 x 75, seed architecture)", f"{trained['epochs']} epochs, best {Path(trained['best_checkpoint']).name}"),
        ("validation AUC", f"{m.get('val/auroc', float('nan')):.3f}"),
        ("test AUC / accuracy", f"{evaluated['auroc']:.3f} / {evaluated['accuracy']:.3f} (n={evaluated['n']})"),
        ("confusion matrix (acdc, clone)", str(evaluated["confusion_matrix"])),
        ("k-means clusters", f"k={clusters['k']}, silhouette {clusters['silhouette']:.3f}"),
        ("wall time", ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())),
        ("outputs", f"{DEMO}/logs/train/runs/workflow_actions, {DEMO}/logs/eval/runs/workflow_actions "
                    f"(roc.png, confusion.png), {DEMO}/clusters"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * 78 + "\ncmsdl demo: workflow error-handling actions (ISGC 2018 seed study)\n" + "=" * 78)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
