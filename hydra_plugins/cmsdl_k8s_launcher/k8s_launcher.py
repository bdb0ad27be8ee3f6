"""K8sLauncher: submits one job per sweep point (labelled with the sweep id), optionally waits and collects metrics.

Found by Hydra in the `hydra_plugins` namespace package; configured by configs/hydra/launcher/k8s.yaml.
Each point's manifests, point.json (overrides, job) and, with wait=true, its metrics land in
<sweep dir>/<job number>/, from which the sweep's summary.csv is written (cmsdl.sweeps).
The Kubernetes client is imported only when a sweep is launched: `cmsdl train` imports this module to register it.

Metrics come from the metrics.json that `cmsdl train` writes in the pod's run directory. That directory is on the
outputs claim, which is mounted in the pods only (the launcher runs on the submitting machine, and a finished pod
cannot be exec'd into), so each pod runs the Hydra callback `PrintMetricsJson`, which prints the file's path and
contents as one JSON line at the end of rank 0's log; the launcher reads that line back with json.loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cmsdl.io import atomic_write, write_json
from cmsdl.sweeps import POINT_FILE, record_failure

log = logging.getLogger(__name__)
METRICS_JSON_KEY = "cmsdl_metrics_json"  # the line: {"cmsdl_metrics_json": <path in the pod>, "contents": {...}}


class PrintMetricsJson(Callback):
    """Run in the pods (`PRINT_METRICS_JSON` override): after a successful `cmsdl train`, global rank 0 prints the
    run's metrics.json as one JSON line (`metrics_json_line`)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if os.environ.get("RANK", "0") != "0" or job_return.status != JobStatus.COMPLETED:
            return
        path = Path(str(config.hydra.runtime.output_dir)) / "metrics.json"
        try:
            contents = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("%s: not printed for the sweep launcher: %s", path, err)
            return
        print(metrics_json_line(path, contents), flush=True)


PRINT_METRICS_JSON = f"+hydra.callbacks.print_metrics_json._target_={PrintMetricsJson.__module__}.PrintMetricsJson"


def metrics_json_line(path: Path, contents: dict[str, Any]) -> str:
    return json.dumps({METRICS_JSON_KEY: str(path), "contents": contents})


def read_metrics_json_line(lines: list[str]) -> dict[str, Any] | None:
    """The last `metrics_json_line` in a pod's log, as {METRICS_JSON_KEY: path, "contents": metrics.json}."""
    for line in reversed(lines):
        if not line.lstrip().startswith("{"):
            continue
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and METRICS_JSON_KEY in document and isinstance(document.get("contents"), dict):
            return document
    return None


def job_prefix(experiment: str | None, sweep_dir: Path) -> str:
    """cmsdl-<experiment>-<sweep dir name>, a valid job name once '-<number>' is appended."""
    from cmsdl.k8s.manifests import MAX_NAME

    stem = re.sub(r"[^a-z0-9]+", "-", f"cmsdl-{experiment or 'sweep'}-{sweep_dir.name}".lower())
    return stem[: MAX_NAME - 5].strip("-")


class K8sLauncher(Launcher):
    def __init__(self, k8s: DictConfig, wait: bool = False, poll_seconds: float = 10,
                 timeout_seconds: float | None = None) -> None:
        self.k8s = k8s
        self.wait = wait
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cmsdl.k8s.cluster import Cluster
        from cmsdl.k8s.manifests import experiment_of, label_value, render, to_yaml

        assert self.config is not None and self.hydra_context is not None, "setup() was not called"
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        points = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            overrides = list(overrides)
            # every point is composed before any is submitted: a typo fails here, not on the cluster
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            name = f"{job_prefix(experiment_of(overrides), sweep_dir)}-{idx}"
            # paths.* place the sweep directory on this machine; in the pods, paths follow the k8s mounts
            pod_overrides = [o for o in overrides if not o.lstrip("+~").startswith("paths.")] + [PRINT_METRICS_JSON]
            manifests = render(self.k8s, pod_overrides, name=name, sweep=label_value(sweep_dir.name))
            points.append((idx, name, overrides, sweep_config, manifests))
        cluster = Cluster(self.k8s.namespace)
        submitted = []
        for idx, name, overrides, sweep_config, manifests in points:
            with atomic_write(sweep_dir / str(idx) / "manifests.yaml") as handle:
                handle.write(to_yaml(manifests))
            write_json(sweep_dir / str(idx) / POINT_FILE, {"overrides": overrides, "job": name})  # summary.csv
            cluster.create(manifests)
            log.info("#%d: %s submitted as %s", idx, " ".join(overrides), name)
            submitted.append((idx, name, overrides, sweep_config))
        return [self._result(cluster, sweep_dir, *point) for point in self._wait_all(cluster, submitted)]

    def _wait_all(self, cluster: Any, submitted: list) -> list:
        """Poll until every job has finished (wait=true) or the timeout passes."""
        from cmsdl.k8s.cluster import K8sError

        if not self.wait:
            return submitted
        deadline = None if self.timeout_seconds is None else time.monotonic() + float(self.timeout_seconds)
        pending = {name for _, name, _, _ in submitted}
        while pending:
            pending = {name for name in pending if not cluster.job_state(name, self.k8s.flavour)["finished"]}
            if pending and deadline is not None and time.monotonic() > deadline:
                raise K8sError(f"hydra.launcher.timeout_seconds={self.timeout_seconds}: jobs still running: "
                               f"{', '.join(sorted(pending))} (they keep running; see `cmsdl k8s status`)")
            if pending:
                time.sleep(float(self.poll_seconds))
        return submitted

    def _result(self, cluster: Any, sweep_dir: Path, idx: int, name: str, overrides: list[str],
                sweep_config: DictConfig) -> JobReturn:
        result = JobReturn(overrides=overrides, cfg=sweep_config, hydra_cfg=self.config,
                           working_dir=str(sweep_dir / str(idx)), task_name=str(self.config.hydra.job.name))
        if not self.wait:
            result.status, result.return_value = JobStatus.COMPLETED, None
            return result
        from cmsdl.k8s.cluster import K8sError

        state = cluster.job_state(name, self.k8s.flavour)
        printed = self._pod_metrics_json(cluster, idx, name) if state["succeeded"] else None
        contents = printed["contents"] if printed else {}
        metrics = contents.get("metrics") or {}
        write_json(sweep_dir / str(idx) / "metrics.json",
                   {"job": name, "namespace": self.k8s.namespace, "overrides": overrides,
                    "succeeded": state["succeeded"], "conditions": state["conditions"], "metrics": metrics,
                    "pod_metrics_json": printed[METRICS_JSON_KEY] if printed else None,
                    "best_checkpoint": contents.get("best_checkpoint")})
        if not state["succeeded"]:
            result.status = JobStatus.FAILED
            result.return_value = K8sError(f"job {name!r} ({' '.join(overrides)}) did not succeed: "
                                           f"{', '.join(state['conditions'])}; see `cmsdl k8s logs k8s.name={name}`")
            record_failure(result, sweep_dir / str(idx))  # a row of summary.csv; the sweep goes on
            return result
        monitor = OmegaConf.select(sweep_config, "optimized_metric")
        result.status, result.return_value = JobStatus.COMPLETED, metrics.get(monitor) if monitor else None
        return result

    def _pod_metrics_json(self, cluster: Any, idx: int, name: str) -> dict[str, Any] | None:
        """The metrics.json that rank 0 of job `name` printed (`PrintMetricsJson`), or None with a warning."""
        from cmsdl.k8s.cluster import K8sError

        try:
            printed = read_metrics_json_line(list(cluster.logs(name, follow=False)))
        except K8sError as err:  # e.g. the pods are already gone (ttlSecondsAfterFinished)
            log.warning("#%d %s: no metrics collected: %s", idx, name, err)
            return None
        if printed is None:
            log.warning("#%d %s: no metrics collected: rank 0's log has no %r line (printed at the end of a "
                        "successful `cmsdl train` in the pod)", idx, name, METRICS_JSON_KEY)
        return printed
