"""Training loggers chosen by `logger=csv|tensorboard|mlflow|many`: a CSV log that survives resumes, and an MLflow
logger that continues the same MLflow run when a run resumes and attaches the run's outputs as artifacts.

Imports Lightning (they are Lightning loggers); MLflow is imported only when `logger=mlflow` is chosen.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, MLFlowLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from cmsdl.io import atomic_write, write_json

log = logging.getLogger(__name__)
MLFLOW_RUN_FILE = "mlflow_run.json"  # in the run directory: {run_id, tracking_uri}; a resumed run continues it
RUN_ARTIFACT_PATTERNS = ("config.yaml", "metrics.json", "*.png", "*.onnx", "csv/metrics.csv")


class ResumableCSVLogger(Logger):
    """<save_dir>/<name>/<version>/metrics.csv, one row per logging call (epoch, step, metrics...), appended to when
    the run resumes in the same directory; a metric first seen later widens the header (the file is rewritten)."""

    def __init__(self, save_dir: str | Path, name: str = "csv", version: str | int = "",
                 flush_logs_every_n_steps: int = 100) -> None:
        super().__init__()
        self._save_dir = str(save_dir)
        self._name = name
        self._version = version
        self.flush_every = flush_logs_every_n_steps
        self.pending: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str | int:
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return str(Path(self._save_dir) / self._name / str(self._version))

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / "metrics.csv"

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """hparams.yaml beside metrics.csv (what Lightning's CSVLogger writes)."""
        from pytorch_lightning.core.saving import save_hparams_to_yaml

        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(Path(self.log_dir) / "hparams.yaml", params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        row = {key: value.item() if hasattr(value, "item") else value for key, value in metrics.items()}
        self.pending.append({**row, "step": step} if step is not None else row)
        if len(self.pending) >= self.flush_every:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if self.pending:
            append_csv_rows(self.metrics_file, self.pending)
            self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def csv_header(path: Path) -> list[str]:
    try:
        with path.open(newline="") as handle:
            return next(csv.reader(handle), [])
    except OSError:
        return []


def ordered_columns(keys: Iterable[str]) -> list[str]:
    """epoch and step first (as Lightning's CSV log has them), then the metrics by name."""
    keys = set(keys)
    return [k for k in ("epoch", "step") if k in keys] + sorted(keys - {"epoch", "step"})


def append_csv_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append `rows` under the file's header; where they bring new columns, rewrite the file (atomically) with the
    wider header, earlier rows kept."""
    header = csv_header(path)
    new_keys = {key for row in rows for key in row} - set(header)
    if header and not new_keys:
        with path.open("a", newline="") as handle:
            csv.DictWriter(handle, header).writerows(rows)
        return
    earlier: list[dict[str, Any]] = []
    if header:
        with path.open(newline="") as handle:
            earlier = list(csv.DictReader(handle))
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ordered_columns([*header, *new_keys])
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(earlier + rows)


def default_tracking_uri(log_dir: str | Path) -> str:
    """MLFLOW_TRACKING_URI from the environment, else a SQLite store in the log directory (no server needed)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(log_dir).resolve() / 'mlflow.db'}"


def local_artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """Beside a local SQLite store: <store dir>/mlartifacts/<experiment> (MLflow would use ./mlruns in the working
    directory); None for a server, which chooses its own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return str(Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts" / experiment_name)


def keeping_environment_uri(call: Any) -> Any:
    """call(), undoing what mlflow.set_tracking_uri does to MLFLOW_TRACKING_URI in os.environ (it exports the URI to
    child processes): a later run in this process or its children must not take this run's store for the user's."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        return call()
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as {'model.optimizer.lr': '0.001', ...}; lists stay one value."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def hydra_tags() -> dict[str, str]:
    """Tags of this run as Hydra knows it: the experiment= option, and the sweep id and point number in a sweep."""
    from hydra.core.hydra_config import HydraConfig

    try:
        hc = HydraConfig.get()
    except ValueError:
        return {}
    tags = {"experiment": str(hc.runtime.choices.get("experiment") or ""), "task": str(hc.job.name)}
    if str(hc.mode).endswith("MULTIRUN"):
        tags |= {"sweep": Path(str(hc.sweep.dir)).name, "sweep_point": str(hc.job.num)}
    return {k: v for k, v in tags.items() if v and v != "None"}


class TrackedMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger for cmsdl runs: store from the environment or <log dir>/mlflow.db, metrics with the
    epoch as step, params that never clash on resume, the run id kept in <run dir>/mlflow_run_id so that a resumed
    run continues the same MLflow run, and `log_run_outputs` for the run's files."""

    def __init__(self, run_dir: str | Path, experiment_name: str | None = None, tracking_uri: str | None = None,
                 log_dir: str | Path = "logs", tags: Mapping[str, Any] | None = None,
                 artifact_location: str | None = None) -> None:
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # its records go to the run's log, not its handler
        uri = tracking_uri or default_tracking_uri(log_dir)
        tag_values = hydra_tags() | {k: str(v) for k, v in (tags or {}).items()}
        name = experiment_name or tag_values.get("experiment") or "cmsdl"
        self.run_dir = Path(run_dir)
        super().__init__(experiment_name=name, run_name=self.run_dir.name, tracking_uri=uri,
                         tags=tag_values | {"run_dir": str(self.run_dir)},
                         artifact_location=artifact_location or local_artifact_location(uri, name),
                         run_id=self.saved_run_id())

    def saved_run_id(self) -> str | None:
        saved = tracked_run(self.run_dir)
        return saved["run_id"] if saved else None

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The MLflow client, the run created (and its id saved) or continued (status back to RUNNING)."""
        if self._initialized:
            return self._mlflow_client
        if self._run_id is not None and not self.run_exists(self._run_id):
            log.warning("%s: MLflow run %s is not in %s; starting a new MLflow run", self.run_dir / MLFLOW_RUN_FILE,
                        self._run_id, self._tracking_uri)
            self._run_id = None
        continued = self._run_id is not None
        client = keeping_environment_uri(lambda: MLFlowLogger.experiment.fget(self))
        if continued:
            client.update_run(self._run_id, status="RUNNING")
            log.info("MLflow: continuing run %s in %s", self._run_id, self._tracking_uri)
        else:
            write_json(self.run_dir / MLFLOW_RUN_FILE, {"run_id": self._run_id, "tracking_uri": self._tracking_uri})
            log.info("MLflow: run %s in %s", self._run_id, self._tracking_uri)
        return client

    def run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._mlflow_client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's call with the model's hparams: nothing, `log_params` logs the whole config (which holds them)."""

    @rank_zero_only
    def log_params(self, params: Mapping[str, Any]) -> None:
        """The flattened config as params not yet in the run (MLflow params cannot change): a resumed run re-logs
        nothing, and keeps the values it started with."""
        from mlflow.entities import Param

        flat = flatten(params)
        existing = self.experiment.get_run(self.run_id).data.params
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v[:6000])
        if changed:
            log.warning("MLflow run %s keeps its earlier values of %s", self.run_id, ", ".join(changed[:5]))
        new = [Param(k, v[:6000]) for k, v in flat.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.experiment.log_batch(run_id=self.run_id, params=new[start:start + 100])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics with the epoch as their step (every cmsdl metric is logged once per epoch)."""
        epoch = metrics.get("epoch")
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"},
                            int(epoch) if epoch is not None else step)

    @rank_zero_only
    def log_run_outputs(self, run_dir: Path) -> None:
        """The run's config, metrics.json, CSV log, training curves (drawn here from the CSV log) and exported models
        as artifacts of the MLflow run."""
        from cmsdl.report import plot_training_curves

        plot_training_curves(run_dir / "csv" / "metrics.csv", run_dir / "training_curves.png", run_dir.name)
        log_artifacts(self.experiment, self.run_id, run_dir, RUN_ARTIFACT_PATTERNS)


def tracked_run(run_dir: Path) -> dict[str, str] | None:
    """The MLflow run of a run directory ({run_id, tracking_uri}), None where it has none."""
    try:
        saved = json.loads((Path(run_dir) / MLFLOW_RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and isinstance(saved.get("run_id"), str) else None


def log_artifacts(client: Any, run_id: str, root: Path, patterns: Iterable[str], under: str | None = None) -> None:
    """Files of `root` matching `patterns` as artifacts of an MLflow run, their folders kept (below `under`)."""
    for pattern in patterns:
        for path in sorted(p for p in root.glob(pattern) if p.is_file()):
            subdir = "/".join(p for p in (under, str(path.parent.relative_to(root))) if p and p != ".")
            client.log_artifact(run_id, str(path), subdir or None)


def attach_to_tracked_run(run_dir: Path, files_dir: Path, under: str) -> None:
    """Add the files in `files_dir` (an evaluation's plots and metrics, an exported model) to the MLflow run of the
    training run `run_dir`, below `under`; nothing where that run was not tracked with MLflow."""
    saved = tracked_run(run_dir)
    if saved is None:
        return
    from mlflow.tracking import MlflowClient

    log_artifacts(MlflowClient(saved.get("tracking_uri")), saved["run_id"], Path(files_dir), ("*",), under)
    log.info("MLflow: %s added to run %s under %s/", files_dir, saved["run_id"], under)


def log_config(loggers: Iterable[Logger], config: Mapping[str, Any]) -> None:
    """The resolved run config as the params of the MLflow run (the other loggers get the model's hparams, as
    Lightning gives them)."""
    for logger in loggers:
        if isinstance(logger, TrackedMLFlowLogger):
            logger.log_params(config)


def log_run_outputs(loggers: Iterable[Logger], run_dir: Path) -> None:
    """Hand the finished run's files to the loggers that keep artifacts (MLflow), and close their runs."""
    for logger in loggers:
        if isinstance(logger, TrackedMLFlowLogger):
            logger.log_run_outputs(run_dir)
            logger.finalize("success")
