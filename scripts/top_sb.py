"""The seed's signal-vs-background study on synthetic NanoAOD: MLP, DeepSets and boosted trees side by side.

Simulates ttbar and QCD (`cmsdl simulate-top`) unless the files exist, trains `experiment=top_sb` (MLP) and
`experiment=top_sb_deepsets`, evaluates both on the test split, fits the gradient-boosting baseline on the same
training rows, and writes one ROC plot and one AUC table (Markdown) for the three on the same test events.

    python scripts/top_sb.py --work top_sb --events 40000 --out docs/top_sb.md -- trainer.max_epochs=15
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from cmsdl.config import config_dir
from cmsdl.data.root_table import RootTableDataModule
from cmsdl.report import background_rejection, efficiency_curve, plot_rejection
from cmsdl.tools.boosting import fit_boosting

MODELS = {"mlp": ("top_sb", "MLP (128-128-64)"), "deepsets": ("top_sb_deepsets", "DeepSets over jets")}


def cmsdl(*args: str) -> None:
    print("$ cmsdl " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "cmsdl.cli", *args], check=True)


def network_scores(work: Path, name: str, experiment: str, extra: list[str]) -> tuple[dict[str, float], dict]:
    """Train and evaluate one network (reused when done); test-split scores by event id, and run facts."""
    logs = work / "logs"
    done = logs / "eval" / "runs" / name / "predictions.csv"
    facts_file = logs / f"{name}.facts.json"
    if not done.is_file():
        start = time.perf_counter()
        cmsdl("train", f"experiment={experiment}", f"paths.data_dir={work / 'data'}", f"paths.log_dir={logs}",
              f"run_name={name}", "callbacks.progress_bar.refresh_rate=0", *extra)
        trained = json.loads((logs / "train" / "runs" / name / "metrics.json").read_text())
        facts_file.write_text(json.dumps({"epochs": trained["epochs"], "minutes": (time.perf_counter() - start) / 60}))
        cmsdl("eval", f"ckpt={trained['best_checkpoint']}", f"paths.log_dir={logs}", f"run_name={name}", "signal=ttbar")
    with done.open() as handle:
        scores = {row["id"]: float(row["p_ttbar"]) for row in csv.DictReader(handle)}
    return scores, json.loads(facts_file.read_text())


def datamodule(work: Path) -> RootTableDataModule:
    data = OmegaConf.load(Path(config_dir()) / "data" / "root_table.yaml")
    data.spec.files = {"ttbar": [str(work / "data/top/ttbar_*.root")], "qcd": [str(work / "data/top/qcd_*.root")]}
    settings = OmegaConf.to_container(data)
    settings.pop("_target_")
    settings["seed"] = 12345
    return RootTableDataModule(**settings)


def boosting_scores(work: Path) -> tuple[dict[str, float], np.ndarray, np.ndarray, dict]:
    """Boosted trees on the training rows; test scores by event id, the test labels and event weights in loader
    order."""
    dm = datamodule(work)
    start = time.perf_counter()
    model = fit_boosting(dm)
    minutes = (time.perf_counter() - start) / 60
    ids = dm.split_ids("test")
    xs, ys, ws = zip(*((b[0].numpy(), b[1].numpy(), b[2].numpy()) for b in dm.split_loader("test")))
    probs = model.predict_proba(np.concatenate(xs))[:, dm.class_names.index("ttbar")]
    facts = {"iterations": int(model.n_iter_), "minutes": minutes}
    return dict(zip(ids, probs)), np.concatenate(ys), np.concatenate(ws), facts


def plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, n_events: int) -> None:
    """Signal efficiency vs background rejection (genWeight-weighted) of every model on the same test events."""
    plot_rejection(curves, path, title=f"all-hadronic ttbar vs QCD multijet: test split, {n_events} events",
                   weighted=True, signal_name="signal (ttbar)", background_name="background (QCD)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("top_sb"))
    parser.add_argument("--events", type=int, default=40000, help="simulated events per process")
    parser.add_argument("--out", type=Path, default=Path("docs/top_sb.md"))
    parser.add_argument("overrides", nargs="*", help="cmsdl train overrides for both networks")
    args = parser.parse_args()
    work = args.work.resolve()
    if not list((work / "data/top").glob("ttbar_*.root")):
        cmsdl("simulate-top", f"out={work / 'data/top'}", f"n_events={args.events}", "progress=false")
    boosted, labels, weights, boost_facts = boosting_scores(work)
    ids = list(boosted)
    results = {"Gradient boosting (sklearn HistGBT)": ([boosted[i] for i in ids], boost_facts)}
    for name, (experiment, label) in MODELS.items():
        scores, facts = network_scores(work, name, experiment, args.overrides)
        results[label] = ([scores[i] for i in ids], facts)
    curves = {}
    rows = ["| Model | test AUC | test AUC, events weighted by genWeight | QCD rejection at 50% ttbar efficiency "
            "(weighted) | cost |", "|---|---|---|---|---|"]
    for label, (scores, facts) in results.items():
        auc = roc_auc_score(labels == 0, scores)
        sig_eff, bkg_eff, weighted = efficiency_curve(np.asarray(scores), labels == 0, weights)
        curves[label] = (sig_eff, bkg_eff, weighted)
        cost = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in facts.items())
        rejection = background_rejection(sig_eff, bkg_eff, 0.5)
        rows.append(f"| {label} | {auc:.4f} | {weighted:.4f} | {rejection:.1f} | {cost} |")
    png = args.out.with_suffix(".png")
    plot(curves, png, len(ids))
    text = (f"# ttbar vs QCD on synthetic NanoAOD ({args.events} events per process, {len(ids)} test events)\n\n"
            f"Written by `python scripts/top_sb.py --events {args.events} {' '.join(args.overrides)}` (CPU minutes on "
            "a 2-core machine). The networks train with the events' genWeight, every class normalised to the same "
            "total; the ROC curves (signal efficiency vs background rejection) weight the test events the same way.\n\n"
            + "\n".join(rows) + f"\n\n![ROC curves]({png.name})\n")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
