"""AUC as mean ± std over weeks and over seeds: the popularity rolling window and the workflow DNN, repeated.

    .venv/bin/python scripts/seed_repeats.py popularity --input data/popularity.csv --out logs/repeats/popularity
    .venv/bin/python scripts/seed_repeats.py workflows --input data/workflows.json --out logs/repeats/workflows
    ... [--seeds 1 2 3 4 5] [-- extra cmsdl overrides, e.g. max_windows=5]
    .venv/bin/python scripts/seed_repeats.py popularity --data-seeds 1 2 3 4 5 --seeds 12345 --out logs/repeats/data

Each seed is one `cmsdl popularity ... seed=<s>` (the DNN's initialisation and the baselines' random_state) or
one `cmsdl train experiment=workflow_actions seed=<s>` (initialisation and the 70/15/15 split) on the same data,
run as a user would, in `<out>/seed<s>`; a seed whose outputs exist is read, not rerun. With `--data-seeds`, the
data are simulated once per data seed instead (`cmsdl simulate-popularity|simulate-workflows seed=<d>` plus
`--simulate key=value ...`, in `<out>/data<d>/`) and every training seed runs on each: the spread over seeds is
then over (data seed, training seed) runs. Prints and writes
`<out>/repeats.json`: per model the AUC averaged over every (seed, week), the standard deviation over weeks (of
the per-week AUC averaged over seeds) and over seeds (of each seed's mean over weeks); sample standard deviations.
For popularity also FPR and FNR pooled over all (seed, week) pairs at the run's decision threshold, and
`fnr_all_popular`: the FNR when the popular datasets that were no candidates (new, dormant) count as missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SEEDS = (1, 2, 3, 4, 5)


def run_cmsdl(*args: str) -> None:
    """`cmsdl <args>` in a fresh interpreter; stops with its output when it fails."""
    proc = subprocess.run([sys.executable, "-m", "cmsdl.cli", *args], text=True, capture_output=True,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise SystemExit(f"cmsdl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")


def sample_std(values: np.ndarray) -> float:
    """Standard deviation with one degree of freedom removed (0 for a single value)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(auc: dict[str, dict[Any, dict[int, float]]]) -> dict[str, dict[str, float]]:
    """auc[model][run][week] → mean over (run, week), std over weeks, std over runs (seeds; NaN weeks skipped)."""
    summary = {}
    for model, by_seed in auc.items():
        seeds = sorted(by_seed)
        weeks = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
        grid = np.array([[by_seed[s][w] for w in weeks] for s in seeds], dtype=float)   # seeds x weeks
        per_week, per_seed = np.nanmean(grid, axis=0), np.nanmean(grid, axis=1)
        summary[model] = {"auc": float(np.nanmean(grid)), "std_weeks": sample_std(per_week[np.isfinite(per_week)]),
                          "std_seeds": sample_std(per_seed), "n_weeks": len(weeks), "n_seeds": len(seeds),
                          "per_seed": [round(float(v), 4) for v in per_seed]}
    return summary


def popularity_auc(args: argparse.Namespace,
                   rates: dict[str, dict[str, float]]) -> dict[str, dict[int, dict[int, float]]]:
    """Run the rolling window once per seed; AUC per model, seed and target week (pooled error counts into rates)."""
    auc: dict[str, dict[int, dict[int, float]]] = {}
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        if not (out / "summary.json").is_file():
            run_cmsdl("popularity", f"input={args.input}", f"out={out}", f"seed={seed}", "progress=false",
                      *args.overrides)
        with open(out / "metrics.csv") as handle:
            for row in csv.DictReader(handle):
                auc.setdefault(row["model"], {}).setdefault(seed, {})[int(row["week"])] = float(row["auc"])
                count_errors(rates.setdefault(row["model"], {}), row)
    return auc


def count_errors(counts: dict[str, float], row: dict[str, str]) -> None:
    """Add one metrics.csv row's false negatives/positives, popular, unpopular and uncovered popular to counts."""
    popular, negatives = int(row["n_popular"]), int(row["n"]) - int(row["n_popular"])
    missed = sum(int(row.get(key) or 0) for key in ("n_new_popular", "n_dormant_popular"))
    for key, value in (("fn", float(row["fnr"]) * popular), ("fp", float(row["fpr"]) * negatives),
                       ("popular", popular), ("negatives", negatives), ("uncovered", missed)):
        counts[key] = counts.get(key, 0.0) + (value if value == value else 0.0)


def error_rates(counts: dict[str, float]) -> dict[str, float]:
    """FPR, FNR on the candidates, and FNR on all popular dataset-weeks (uncovered ones count as missed)."""
    return {"fpr": counts["fp"] / max(counts["negatives"], 1), "fnr": counts["fn"] / max(counts["popular"], 1),
            "fnr_all_popular": (counts["fn"] + counts["uncovered"]) / max(counts["popular"] + counts["uncovered"], 1),
            "popular_not_candidates": int(counts["uncovered"])}


def workflow_auc(args: argparse.Namespace) -> dict[str, dict[int, dict[int, float]]]:
    """Train the seed's workflow DNN once per seed; test AUC per seed (one 'week': the test split)."""
    auc: dict[int, dict[int, float]] = {}
    for seed in args.seeds:
        run_dir = args.out / "train" / "runs" / f"seed{seed}"
        if not (run_dir / "metrics.json").is_file():
            run_cmsdl("train", "experiment=workflow_actions", f"data.source.path={args.input}",
                      f"paths.log_dir={args.out}", f"run_name=seed{seed}", f"seed={seed}", "trainer=cpu",
                      "callbacks.progress_bar.refresh_rate=0", *args.overrides)
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        auc[seed] = {0: float(metrics["test/auroc"])}
    return {"dnn": auc}


def simulated_input(study: str, data_seed: int, out: Path, settings: list[str]) -> Path:
    """The study's simulated data for one data seed, written once into `out`."""
    path = out / ("popularity.csv" if study == "popularity" else "workflows.json")
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        command = "simulate-popularity" if study == "popularity" else "simulate-workflows"
        run_cmsdl(command, f"out={path}", f"seed={data_seed}", *settings)
    return path


def repeated_auc(args: argparse.Namespace,
                 rates: dict[str, dict[str, float]]) -> dict[str, dict[Any, dict[int, float]]]:
    """AUC per model, run and week: training seeds on --input, or on the data of every data seed."""
    if not args.data_seeds:
        return popularity_auc(args, rates) if args.study == "popularity" else workflow_auc(args)
    auc: dict[str, dict[Any, dict[int, float]]] = {}
    for data_seed in args.data_seeds:
        out = args.out / f"data{data_seed}"
        run = argparse.Namespace(**{**vars(args), "out": out,
                                    "input": simulated_input(args.study, data_seed, out, args.simulate)})
        part = popularity_auc(run, rates) if args.study == "popularity" else workflow_auc(run)
        for model, by_seed in part.items():
            for seed, weeks in by_seed.items():
                auc.setdefault(model, {})[f"data{data_seed}/seed{seed}"] = weeks
    return auc


def print_table(study: str, summary: dict[str, dict[str, Any]]) -> None:
    over_weeks = study == "popularity"
    print(f"{study}: AUC mean" + (" ± std over weeks" if over_weeks else "") + " ± std over seeds")
    for model, s in summary.items():
        weeks = f" ± {s['std_weeks']:.3f} (weeks, n={s['n_weeks']})" if over_weeks else ""
        rates = (f"; FPR {s['fpr']:.3f}, FNR {s['fnr']:.3f}, FNR over all popular {s['fnr_all_popular']:.3f}"
                 if "fpr" in s else "")
        print(f"  {model:18} {s['auc']:.3f}{weeks} ± {s['std_seeds']:.4f} (seeds, n={s['n_seeds']}); "
              f"per seed {s['per_seed']}{rates}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=["popularity", "workflows"])
    parser.add_argument("--input", type=Path, help="popularity CSV or workflows JSON (or --data-seeds)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="training seeds")
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[], help="simulate the data once per seed")
    parser.add_argument("--simulate", nargs="+", default=[], help="simulate-* overrides, e.g. n_workflows=4000")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.overrides = argv[cut + 1:]
    if not args.data_seeds and not (args.input and args.input.is_file()):
        raise SystemExit(f"error: --input {args.input}: no such file (or give --data-seeds)")
    args.out.mkdir(parents=True, exist_ok=True)
    rates: dict[str, dict[str, float]] = {}
    summary = summarise(repeated_auc(args, rates))
    for model, counts in rates.items():
        summary[model].update(error_rates(counts))
    report = {"study": args.study, "input": str(args.input), "seeds": args.seeds, "data_seeds": args.data_seeds,
              "simulate": args.simulate, "overrides": args.overrides, "models": summary}
    (args.out / "repeats.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(args.study, summary)
    return report


if __name__ == "__main__":
    main()
