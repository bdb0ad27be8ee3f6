"""Fill the seed's event-classification table (rows: samples, columns: ResNet34 / ResNet50 / ResNet50 modified).

Runs `cmsdl train` + `cmsdl eval` for every experiment x model on an existing hits2png output and writes a
Markdown table with accuracy, confusion matrix and CPU/GPU minutes per cell. Finished cells are reused (resume).
With `--raw` (the `cmsdl simulate` files the images were made from), each row also gets the "hit counts only"
baseline: 5-fold accuracy of gradient boosting on the total hits / the hits per subdetector, i.e. what a classifier
reaches without any image; the networks' accuracy above it is what the images add.

    python scripts/event_table.py --manifest data/images/manifest.csv --out docs/event_table.md \
        --raw 'data/raw/*.root' --models resnet34 resnet50 resnet50_modified -- trainer=gpu trainer.max_epochs=20
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from cmsdl.config import config_dir
from cmsdl.tools.hit_counts import hit_count_baseline

EXPERIMENTS = {"event_jpsi_vs_qcd": "Jpsi vs QCD", "event_higgs_vs_jpsi": "Higgs vs Jpsi",
               "event_higgs_vs_qcd": "Higgs vs QCD", "event_3class": "Higgs vs Jpsi vs QCD"}
MODELS = {"resnet34": "ResNet34", "resnet50": "ResNet50", "resnet50_modified": "ResNet50 modified"}
SEED = {"event_jpsi_vs_qcd": ("95%", "90%", "99%"), "event_higgs_vs_jpsi": ("93%", "91%", "95%"),
        "event_higgs_vs_qcd": ("72%", "76%", "88%"), "event_3class": ("74%", "79%", "88%")}


def cmsdl(*args: str) -> None:
    print("$ cmsdl " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "cmsdl.cli", *args], check=True)


def cell(manifest: Path, logs: Path, experiment: str, model: str, extra: list[str]) -> dict:
    """Train and evaluate one cell, or read it back when an earlier run finished it."""
    name = f"{experiment}-{model}"
    done = logs / "cells" / f"{name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    cmsdl("train", f"experiment={experiment}", f"model={model}", f"data.manifest={manifest}", f"paths.log_dir={logs}",
          f"run_name={name}", "callbacks.progress_bar.refresh_rate=0", *extra)
    minutes = (time.perf_counter() - start) / 60
    trained = json.loads((logs / "train" / "runs" / name / "metrics.json").read_text())
    cmsdl("eval", f"ckpt={trained['best_checkpoint']}", f"paths.log_dir={logs}", f"run_name={name}")
    metrics = json.loads((logs / "eval" / "runs" / name / "metrics.json").read_text())
    result = {"accuracy": metrics["accuracy"], "confusion_matrix": metrics["confusion_matrix"], "n": metrics["n"],
              "classes": metrics["class_names"], "epochs": trained["epochs"], "train_minutes": minutes}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result))
    return result


def hit_count_cell(raw: str, logs: Path, experiment: str) -> dict:
    """The hit-counts-only baseline for an experiment's classes, or the one an earlier run computed."""
    done = logs / "cells" / f"{experiment}-hit_counts.json"
    if done.is_file():
        return json.loads(done.read_text())
    classes = list(OmegaConf.load(Path(config_dir()) / "experiment" / f"{experiment}.yaml").data.classes)
    result = hit_count_baseline(sorted(glob.glob(raw)), classes)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result))
    return result


def matrix(m: list[list[int]]) -> str:
    return "[" + " ".join("[" + " ".join(map(str, row)) + "]" for row in m) + "]"


def table(results: dict, models: list[str], header: str, counts: dict | None = None) -> str:
    counts = counts or {}
    count_header = " | Hit counts only (gradient boosting, 5-fold): total / per subdetector" if counts else ""
    lines = [header, "", "| Sample | " + " | ".join(f"{MODELS[m]} accuracy | confusion matrix" for m in models)
             + count_header + " |", "|---|" + "---|---|" * len(models) + ("---|" if counts else "")]
    for exp, title in EXPERIMENTS.items():
        if exp not in results:
            continue
        cells = []
        for m in models:
            r = results[exp].get(m)
            cells.append(f"{100 * r['accuracy']:.1f}% | {matrix(r['confusion_matrix'])}" if r else "– | –")
        if counts:
            c = counts.get(exp)
            cells.append(f"{c['total hits']['accuracy']:.1%} / {c['hits per subdetector']['accuracy']:.1%}" if c else "–")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "Seed (ISGC 2018, 27K real CMS images): " + "; ".join(
        f"{EXPERIMENTS[e]} {' / '.join(v)}" for e, v in SEED.items()) + " (ResNet34 / ResNet50 / ResNet50 modified).", "",
        "Cost per cell (train minutes, epochs): " + "; ".join(
            f"{EXPERIMENTS[e]} {MODELS[m]} {r['train_minutes']:.1f} min, {r['epochs']} ep"
            for e, row in results.items() for m, r in row.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=Path("logs/event_table"))
    parser.add_argument("--out", type=Path, default=Path("docs/event_table.md"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--title", default="## Event classification on the toy tracker")
    parser.add_argument("--raw", help="glob of the `cmsdl simulate` files behind the images: adds the hit-count baseline")
    parser.add_argument("overrides", nargs="*", help="extra `cmsdl train` overrides (after --)")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    counts = {exp: hit_count_cell(args.raw, args.logs.resolve(), exp) for exp in args.experiments} if args.raw else {}
    for exp in args.experiments:
        for model in args.models:
            results.setdefault(exp, {})[model] = cell(args.manifest.resolve(), args.logs.resolve(), exp, model, args.overrides)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table(results, args.models, args.title, counts) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
