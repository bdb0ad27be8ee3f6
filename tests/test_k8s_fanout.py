"""Fan-out of hits2png and predict as Indexed Jobs (`cmsdl k8s render|submit hits2png|predict ...`): the manifests
validate against the real Kubernetes schemas and keep the training jobs' security defaults; bad settings are one
line; and the pods' exact command lines, run here as processes with their indices, give what one process gives."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import numpy as np
import pytest
import toy_onnx
from omegaconf import OmegaConf

import cmsdl.k8s.app as app
from cmsdl.errors import ConfigError
from cmsdl.k8s.fanout import render_fanout
from cmsdl.k8s.manifests import COMPLETION_INDEX, LABEL_JOB
from cmsdl.sim.tracker import simulate_events, write_root
from test_k8s_manifests import VERSIONS, k8s_config

PREDICT = ["model=/data/model.onnx", "input=/data/inputs/*.npy", "out=/outputs/scores/predictions.csv"]
HITS2PNG = ["input=/data/raw/*.root", "out=/outputs/images", "size=32"]
EVERYTHING = dict(
    namespace="cms-ml", priority_class="batch-low", service_account="cmsdl-runner", image_pull_secrets=["reg"],
    node_selector={"kubernetes.io/arch": "amd64"}, env={"OMP_NUM_THREADS": "2"},
    secret_env={"EOS_TOKEN": {"secret": "eos", "key": "token"}}, labels={"team": "comp-ops"},
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
    fanout={"completions": 8, "parallelism": 3, "gpus": 1, "image": "registry.cern.ch/cms-ml/cmsdl-inference:0.1.0",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "2Gi"}}},
)


def container_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("workload, overrides, out", [("predict", PREDICT, PREDICT[-1][4:]),
                                                      ("hits2png", HITS2PNG, "/outputs/images")])
@pytest.mark.parametrize("changes", [{}, EVERYTHING], ids=["default", "every field"])
def test_fanout_jobs_validate_against_the_kubernetes_schemas(workload: str, overrides: list[str], out: str,
                                                             changes: dict, version: str) -> None:
    [job] = render_fanout(k8s_config(**changes), workload, overrides, out, name="fan")
    kubernetes_validate.validate(job, version, strict=True)


def test_the_validator_rejects_a_broken_fanout_job() -> None:
    [job] = render_fanout(k8s_config(), "predict", PREDICT, "/outputs/p.csv", name="fan")
    job["spec"]["completionsMode"] = job["spec"].pop("completionMode")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)
    job["spec"]["completionMode"] = job["spec"].pop("completionsMode")
    job["spec"]["completions"] = "8"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("description, changes, expected", [
    ("default: 4 pods at once, no GPU", {}, {"completions": 4, "parallelism": 4, "gpu": None}),
    ("parallelism below completions, a GPU per pod", {"fanout": {"completions": 8, "parallelism": 3, "gpus": 1}},
     {"completions": 8, "parallelism": 3, "gpu": "1"}),
    ("an image of their own", {"fanout": {"image": "reg.example/cmsdl-inference:1"}},
     {"completions": 4, "parallelism": 4, "gpu": None, "image": "reg.example/cmsdl-inference:1"}),
])
def test_fanout_builder(description: str, changes: dict, expected: dict) -> None:
    [job] = render_fanout(k8s_config(**changes), "predict", PREDICT, "/outputs/p.csv", name="fan")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = container_of(job)
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == \
        ("Indexed", expected["completions"], expected["parallelism"]), description
    assert container["command"] == ["cmsdl"]
    assert container["image"] == expected.get("image", "registry.example.org/cms/cmsdl:0.1.0"), description
    assert container["args"] == ["predict", *PREDICT, "shard.index=$(JOB_COMPLETION_INDEX)",
                                 f"shard.count={expected['completions']}"], description
    env = {e["name"]: e for e in container["env"]}
    assert COMPLETION_INDEX in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["resources"]["limits"].get("nvidia.com/gpu") == expected["gpu"], description
    assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never" and "subdomain" not in pod
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True and mounts["/outputs"]["readOnly"] is False
    assert {"/tmp", "/dev/shm"} <= set(mounts), "the root file system is read-only"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "predict"
    assert job["metadata"]["labels"][LABEL_JOB] == "fan"


@pytest.mark.parametrize("changes, workload, overrides, out, message", [
    ({"fanout": {"completions": 0}}, "predict", PREDICT, "/outputs/p.csv",
     r"k8s.fanout.completions: expected a whole number >= 1 \(the number of pods and shards\), got 0"),
    ({"fanout": {"completions": 2, "parallelism": 3}}, "predict", PREDICT, "/outputs/p.csv",
     r"k8s.fanout.parallelism: expected null or a whole number from 1 to k8s.fanout.completions \(2\), got 3"),
    ({"fanout": {"gpus": -1}}, "predict", PREDICT, "/outputs/p.csv", r"k8s.fanout.gpus: expected a whole number >= 0"),
    ({"fanout": {"resources": {"limits": {"cpu": "1", "memory": None}}}}, "predict", PREDICT, "/outputs/p.csv",
     r"k8s.fanout.resources.limits.memory: must be set"),
    ({"fanout": {"resources": {"limits": {"cpu": "1", "memory": "2 GB"}}}}, "predict", PREDICT, "/outputs/p.csv",
     r"k8s.fanout.resources.limits.memory: '2 GB' is not a Kubernetes quantity"),
    ({"outputs": {"claim": None, "mount_path": "/outputs"}}, "predict", PREDICT, "/outputs/p.csv",
     r"k8s.outputs.claim: fan-out pods write into one output tree on a shared claim"),
    ({}, "hits2png", HITS2PNG, "data/images", r"out: data/images is not on the outputs claim mounted at /outputs"),
    ({}, "hits2png", HITS2PNG, "/outputsX/images", r"out: /outputsX/images is not on the outputs claim"),
    ({}, "predict", [*PREDICT, "shard.index=1"], "/outputs/p.csv", r"shard.index: set by cmsdl k8s for each pod"),
    ({}, "predict", [*PREDICT, "merge_only=true"], "/outputs/p.csv", r"merge_only: set by cmsdl k8s for each pod"),
    ({}, "train", [], "/outputs", r"'train' cannot be fanned out \(expected one of hits2png, predict\)"),
    ({"namespace": "Bad_NS"}, "predict", PREDICT, "/outputs/p.csv", r"k8s.namespace: 'Bad_NS' is not a valid"),
])
def test_bad_fanout_settings_are_one_line_errors(changes: dict, workload: str, overrides: list[str], out: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_fanout(k8s_config(**changes), workload, overrides, out, name="fan")


def test_arguments_after_the_command_word_belong_to_it(tmp_path: Path) -> None:
    hydra_args, workload = app.parse_arguments(["render", f"out={tmp_path / 'job.yaml'}", "k8s.fanout.completions=2",
                                                "predict", *PREDICT, "k8s.namespace=cms-ml"])
    assert hydra_args == ["action=render", f"out={tmp_path / 'job.yaml'}", "k8s.fanout.completions=2",
                          "k8s.namespace=cms-ml"]
    assert (workload.command, workload.overrides, workload.out) == ("predict", tuple(PREDICT), PREDICT[-1][4:])
    cfg = OmegaConf.create({"action": "render", "out": str(tmp_path / "job.yaml"), "follow": True,
                            "k8s": k8s_config(namespace="cms-ml", fanout={"completions": 2})})
    app.run(cfg, workload)
    import yaml

    [job] = yaml.safe_load_all((tmp_path / "job.yaml").read_text())
    assert job["metadata"]["name"].startswith("cmsdl-predict-") and job["spec"]["completions"] == 2


@pytest.mark.parametrize("args, message", [
    (["render", "predict", "modle=/data/m.onnx", "out=/outputs/p.csv"], r"error: cmsdl predict overrides .*modle"),
    (["render", "hits2png", "out=/outputs/i", "shard.count=3"], r"error: shard.count: set by cmsdl k8s for each pod"),
    (["logs", "predict"], r"error: cmsdl k8s logs: unexpected arguments predict"),
    (["render", "predict", "out=/outputs/p.csv"], r"error: cmsdl predict: no value for input, onnx \(required by "
                                                  r"configs/predict.yaml"),
])
def test_bad_command_lines_exit_2_with_one_line(args: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        app.parse_arguments(args)
    assert stopped.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def pod_processes(job: dict, cwd: Path) -> list[subprocess.Popen]:
    """Every pod of the Indexed Job started here as a process: its command and args with its environment
    (literal values and the completion index) expanded the way the kubelet expands $(VAR)."""
    container = container_of(job)
    processes = []
    for index in range(job["spec"]["completions"]):
        env: dict[str, str] = {}
        for var in container["env"]:
            field = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
            env[var["name"]] = str(index) if COMPLETION_INDEX in field else var["value"]
        line = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), part)
                for part in container["command"] + container["args"]]
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        processes.append(subprocess.Popen(line, cwd=cwd, env={**os.environ, **env, "PATH": path},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return processes


def run_pods(job: dict, cwd: Path) -> list[str]:
    """Run every pod at once (as parallelism = completions does) and wait; their outputs."""
    outputs = []
    for process in pod_processes(job, cwd):
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out[-3000:]
        outputs.append(out)
    return outputs


def claims(tmp_path: Path, **fanout: Any) -> dict:
    """The k8s settings with the data and outputs claims 'mounted' at folders under tmp_path."""
    return k8s_config(data={"claim": "cmsdl-data", "mount_path": str(tmp_path / "data")},
                      outputs={"claim": "cmsdl-outputs", "mount_path": str(tmp_path / "outputs")}, fanout=fanout)


@pytest.mark.slow
def test_predict_pods_run_as_processes_merge_into_what_one_process_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "inputs").mkdir(parents=True)
    toy_onnx.write(data / "model.onnx", toy_onnx.top_model(6))
    rng = np.random.default_rng(2)
    for i, n in enumerate([9, 4, 0, 15, 6]):
        np.save(data / "inputs" / f"part{i}.npy", rng.normal(size=(n, 6)).astype(np.float32))
    overrides = [f"model={data / 'model.onnx'}", f"input={data / 'inputs'}/*.npy", "batch_size=4"]
    out = tmp_path / "outputs" / "scores" / "predictions.csv"
    _, workload = app.parse_arguments(["render", "predict", *overrides, f"out={out}"])
    [job] = render_fanout(claims(tmp_path, completions=3), workload.command, list(workload.overrides), workload.out,
                          name="fan")
    printed = run_pods(job, tmp_path)
    assert sum("merged 34 predictions" in p for p in printed) >= 1, printed
    single = subprocess.run([sys.executable, "-m", "cmsdl.cli", "predict", *overrides, f"out={tmp_path / 'one.csv'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    assert out.read_text() == (tmp_path / "one.csv").read_text()


def write_tracker_files(raw: Path) -> None:
    raw.mkdir(parents=True)
    for seed, process in enumerate(["jpsi", "qcd", "higgs"]):
        write_root(raw / f"{process}_0.root", simulate_events(process, 30, seed + 1), 0)


def manifest_rows(out: Path) -> list[str]:
    return sorted((out / "manifest.csv").read_text().splitlines()[1:])


@pytest.mark.slow
def test_hits2png_pods_run_as_processes_give_the_images_and_manifest_of_one_process(tmp_path: Path) -> None:
    write_tracker_files(tmp_path / "data" / "raw")
    overrides = [f"input={tmp_path / 'data' / 'raw'}/*.root", "size=16", "step_size=10", "workers=0",
                 "progress=false"]
    out = tmp_path / "outputs" / "images"
    _, workload = app.parse_arguments(["render", "hits2png", *overrides, f"out={out}"])
    [job] = render_fanout(claims(tmp_path, completions=4), workload.command, list(workload.overrides), workload.out,
                          name="fan")
    run_pods(job, tmp_path)
    single = subprocess.run([sys.executable, "-m", "cmsdl.cli", "hits2png", *overrides, f"out={tmp_path / 'one'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    assert manifest_rows(out) == manifest_rows(tmp_path / "one") and len(manifest_rows(out)) == 90
    images = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert images == sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert all((out / p).read_bytes() == (tmp_path / "one" / p).read_bytes() for p in images)
