"""`make demo`: the main jobs on built-in synthetic data, end to end, then a short summary table.

Everything lands under ./demo/. Each step is the `cmsdl` command a user would type, printed as it runs.
  1. workflows: simulate-workflows → train experiment=workflow_actions → eval → cluster-workflows
  2. ship:      export the workflow DNN to ONNX → predict new workflows with it (no torch)
  3. events:    simulate (toy tracker) → hits2png → train experiment=event_3class (resnet34, briefly) → eval
  4. top:       simulate-top (NanoAOD-like ttbar/QCD) → train experiment=top_sb from ROOT → export → scores into ROOT
  5. caches:    simulate-popularity → cache-sim (LRU, OPT, PPC, PPC100, SDC)
  6. k8s:       render the Kubernetes job that would train the event model on 2 nodes x 4 GPUs (no cluster needed)
`python scripts/demo.py --parts workflows,ship` runs some parts only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path("demo")
CMSDL = [sys.executable, "-m", "cmsdl.cli"]
PARTS = ("workflows", "ship", "events", "top", "caches", "k8s")
QUIET = ["callbacks.progress_bar.refresh_rate=0"]


def run(*args: str) -> float:
    """Run one cmsdl command, echoing it; returns the seconds it took."""
    print(f"\n$ cmsdl {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([*CMSDL, *args], check=True)
    return time.perf_counter() - start


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def workflows(rows: list[tuple[str, str]], timings: dict[str, float]) -> None:
    data = DEMO / "data" / "workflows.json"
    timings["workflows"] = run("simulate-workflows", f"out={data}", "n_workflows=4000", "seed=7")
    timings["workflows"] += run("train", "experiment=workflow_actions", f"paths.data_dir={DEMO / 'data'}",
                                f"paths.log_dir={DEMO / 'logs'}", "run_name=workflow_actions", "trainer=cpu", *QUIET)
    trained = read_json(DEMO / "logs/train/runs/workflow_actions/metrics.json")
    timings["workflows"] += run("eval", f"ckpt={trained['best_checkpoint']}", f"paths.log_dir={DEMO / 'logs'}",
                                "run_name=workflow_actions")
    timings["workflows"] += run("cluster-workflows", f"input={data}", f"out={DEMO / 'clusters'}")
    evaluated = read_json(DEMO / "logs/eval/runs/workflow_actions/metrics.json")
    clusters = read_json(DEMO / "clusters" / "clusters.json")
    rows += [
        ("workflow DNN (seed 5 x 75)", f"{trained['epochs']} epochs on {clusters['n_workflows']} workflows"),
        ("  test AUC / accuracy", f"{evaluated['auroc']:.3f} / {evaluated['accuracy']:.3f} (n={evaluated['n']})"),
        ("  confusion (acdc, clone)", str(evaluated["confusion_matrix"])),
        ("  k-means clusters", f"k={clusters['k']}, silhouette {clusters['silhouette']:.3f}"),
    ]


def ship(rows: list[tuple[str, str]], timings: dict[str, float]) -> None:
    trained = read_json(DEMO / "logs/train/runs/workflow_actions/metrics.json")
    model = DEMO / "models" / "workflow_actions.onnx"
    timings["ship"] = run("export", f"ckpt={trained['best_checkpoint']}", f"out={model}")
    new = DEMO / "data" / "new_workflows.json"
    timings["ship"] += run("simulate-workflows", f"out={new}", "n_workflows=200", "seed=8")
    timings["ship"] += run("predict", f"model={model}", f"input={new}", f"out={DEMO / 'predictions.csv'}")
    parity = max(read_json(model.with_name("workflow_actions.export.json"))["parity"]["max_abs_diff"].values())
    rows += [("ONNX export", f"{model} (parity with PyTorch: max abs diff {parity:.1e})"),
             ("  torch-free prediction", f"200 new workflows → {DEMO / 'predictions.csv'}")]


def events(rows: list[tuple[str, str]], timings: dict[str, float]) -> None:
    raw, images = DEMO / "data" / "raw", DEMO / "data" / "images"
    timings["events"] = run("simulate", f"out={raw}", "n_events=500", "seed=3", "progress=false")
    timings["events"] += run("hits2png", f"input={raw}/*.root", f"out={images}", "size=64", "projection=[xy,rz]",
                             "progress=false")
    timings["events"] += run("train", "experiment=event_3class", "model=resnet34", f"data.manifest={images}/manifest.csv",
                             f"paths.log_dir={DEMO / 'logs'}", "run_name=event_3class", "trainer=cpu",
                             "trainer.max_epochs=8", "model.optimizer.lr=3e-4", "data.progress=false", *QUIET)
    trained = read_json(DEMO / "logs/train/runs/event_3class/metrics.json")
    timings["events"] += run("eval", f"ckpt={trained['best_checkpoint']}", f"paths.log_dir={DEMO / 'logs'}",
                             "run_name=event_3class")
    evaluated = read_json(DEMO / "logs/eval/runs/event_3class/metrics.json")
    cells = " ".join("[" + " ".join(map(str, r)) + "]" for r in evaluated["confusion_matrix"])
    rows += [(f"event images, resnet34 ({trained['epochs']} epochs)", f"1500 events, 64 px, classes {', '.join(evaluated['class_names'])}"),
             ("  test accuracy [confusion]", f"{100 * evaluated['accuracy']:.0f}% [{cells}]  (seed: 74% for ResNet34)")]


def top(rows: list[tuple[str, str]], timings: dict[str, float]) -> None:
    data = DEMO / "data"
    timings["top"] = run("simulate-top", f"out={data / 'top'}", "n_events=10000", "events_per_file=5000",
                         "progress=false")
    timings["top"] += run("train", "experiment=top_sb", f"paths.data_dir={data}", f"paths.log_dir={DEMO / 'logs'}",
                          "run_name=top_sb", "trainer=cpu", "trainer.max_epochs=8", "data.progress=false", *QUIET)
    trained = read_json(DEMO / "logs/train/runs/top_sb/metrics.json")
    model = DEMO / "models" / "top_sb.onnx"
    timings["top"] += run("export", f"ckpt={trained['best_checkpoint']}", f"out={model}")
    timings["top"] += run("predict", f"model={model}", f"input={data / 'top'}/*.root", f"out={DEMO / 'scores'}")
    metrics = trained["metrics"]
    rows += [(f"ttbar vs QCD from ROOT, MLP ({trained['epochs']} epochs)", "20000 NanoAOD-like events, 45 features"),
             ("  test AUC / accuracy", f"{metrics['test/auroc']:.3f} / {metrics['test/acc']:.3f}"),
             ("  scores back into ROOT", f"{DEMO / 'scores'}/<file>_scores.root (tree Scores, friend of Events)")]


def caches(rows: list[tuple[str, str]], timings: dict[str, float]) -> None:
    data = DEMO / "data" / "popularity.csv"
    timings["caches"] = run("simulate-popularity", f"out={data}", "n_datasets=1500", "n_weeks=40")
    timings["caches"] += run("cache-sim", f"input={data}", f"out={DEMO / 'cache-sim'}", "progress=false")
    rows += [("cache simulation", f"per-site table and hit-rate curves in {DEMO / 'cache-sim'}/ "
                                  "(site_table.csv, hit_rates.png)")]


def k8s(rows: list[tuple[str, str]], timings: dict[str, float]) -> None:
    out = DEMO / "k8s-job.yaml"
    timings["k8s"] = run("k8s", "render", "experiment=event_3class", "k8s=multi_node", "k8s.name=event-ddp",
                         f"out={out}")
    rows += [("Kubernetes job (not submitted)", f"{out}: Indexed Job + headless Service, torchrun on 2 x 4 GPUs")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parts = parser.parse_args().parts.split(",")
    shutil.rmtree(DEMO, ignore_errors=True)
    rows: list[tuple[str, str]] = []
    timings: dict[str, float] = {}
    for part in PARTS:
        if part in parts:
            globals()[part](rows, timings)
    rows.append(("wall time", ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())))
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * 78 + "\ncmsdl demo (synthetic data; outputs in demo/)\n" + "=" * 78)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
