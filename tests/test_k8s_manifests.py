"""Rendered manifests validate against the real Kubernetes API schemas (kubernetes-validate bundles them), the
builders do what their configs say, and the kustomize overlays build with `kubectl kustomize`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from omegaconf import OmegaConf

from cmsdl.errors import ConfigError
from cmsdl.k8s.manifests import (COMPLETION_INDEX, LABEL_EXPERIMENT, LABEL_JOB, LABEL_SWEEP, PYTORCHJOB_API_VERSION,
                                 PYTORCHJOB_KIND, render)
from conftest import REPO, run_cmsdl

# the oldest release with every field used here (podFailurePolicy is GA in 1.31) and the newest bundled
VERSIONS = ["1.31.0", "1.37.0"]
TRAIN = ["experiment=workflow_actions", "model.optimizer.lr=3e-4"]


def k8s_config(option: str = "default", **changes: Any) -> dict:
    cfg = OmegaConf.load(REPO / "configs" / "k8s" / f"{option}.yaml")
    if option != "default":
        cfg = OmegaConf.merge(OmegaConf.load(REPO / "configs" / "k8s" / "default.yaml"),
                              {k: v for k, v in cfg.items() if k != "defaults"})
    cfg.merge_with(changes)
    return OmegaConf.to_container(cfg)


EVERYTHING = dict(
    gpus_per_node=0, nodes=3, namespace="cms-ml", priority_class="research-low", service_account="cmsdl-runner",
    node_selector={"kubernetes.io/arch": "amd64"}, image_pull_secrets=["cern-registry"],
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    env={"NCCL_DEBUG": "WARN"}, secret_env={"WANDB_API_KEY": {"secret": "wandb", "key": "api-key"}},
    active_deadline_seconds=86400, ttl_seconds_after_finished=None,
    labels={"team": "comp-ops", "example.org/owner": "cms_ml.2", "app.kubernetes.io/part-of": "cmsdl"},
    resources={"requests": {"cpu": 0.5, "memory": "500Mi", "ephemeral-storage": "1e9"},
               "limits": {"cpu": "1500m", "memory": "2Gi", "ephemeral-storage": "20G"}}, tmp_size="512Mi",
    data={"claim": None, "mount_path": "/data"},
)
CONFIGS = [
    ("default: one pod, one GPU", k8s_config()),
    ("multi_node: 2 pods x 4 GPUs", k8s_config("multi_node")),
    ("every optional field, CPU only, no data claim", k8s_config(**EVERYTHING)),
    ("pytorchjob: master only", k8s_config("pytorchjob")),
    ("pytorchjob: master + 3 workers, every field", k8s_config("pytorchjob", **EVERYTHING)),
]


def _strict(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_INT = {"type": "integer", "minimum": 0}
_REPLICA = _strict({"replicas": {"type": "integer", "minimum": 1},
                    "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                    "template": {"type": "object"}}, ("replicas", "template"))
# The kubeflow.org/v1 PyTorchJob fields cmsdl writes (training operator 1.7 API types), written out here: the CRD
# is not bundled with kubernetes-validate. The pod templates inside are validated against the real schemas.
PYTORCHJOB_SCHEMA = _strict({
    "apiVersion": {"const": "kubeflow.org/v1"}, "kind": {"const": "PyTorchJob"},
    "metadata": _strict({"name": {"type": "string"}, "namespace": {"type": "string"},
                         "labels": {"type": "object", "additionalProperties": {"type": "string"}}}, ("name",)),
    "spec": _strict({
        "nprocPerNode": {"type": "string", "pattern": "^([0-9]+|auto|cpu|gpu)$"},
        "pytorchReplicaSpecs": _strict({"Master": _REPLICA, "Worker": _REPLICA}, ("Master",)),
        "runPolicy": _strict({"cleanPodPolicy": {"enum": ["All", "Running", "None"]}, "backoffLimit": _INT,
                              "ttlSecondsAfterFinished": _INT, "activeDeadlineSeconds": _INT}),
    }, ("pytorchReplicaSpecs",)),
}, ("apiVersion", "kind", "metadata", "spec"))


def pod_templates(manifest: dict) -> list[dict]:
    """Pod templates of a manifest, as v1 PodTemplate objects the schemas know (for the PyTorchJob's replicas)."""
    if manifest["kind"] == "Job":
        return [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                 "template": manifest["spec"]["template"]}]
    return [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": r["template"]}
            for r in manifest["spec"].get("pytorchReplicaSpecs", {}).values()]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("description, cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_every_manifest_validates_against_the_kubernetes_schemas(description: str, cfg: dict, version: str) -> None:
    manifests = render(cfg, TRAIN, name="schema-check", sweep="2026-01-01_10-00-00")
    for manifest in manifests:
        if manifest["kind"] == PYTORCHJOB_KIND:
            jsonschema.validate(manifest, PYTORCHJOB_SCHEMA)
        else:
            kubernetes_validate.validate(manifest, version, strict=True)
        for template in pod_templates(manifest):
            kubernetes_validate.validate(template, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    [_, job] = render(k8s_config(), TRAIN, name="broken")
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"cores": 8}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "8"
    job["spec"]["parallelsm"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)


def container_of(manifest: dict) -> dict:
    spec = manifest["spec"]
    template = spec["template"] if manifest["kind"] == "Job" else spec["pytorchReplicaSpecs"]["Master"]["template"]
    return template["spec"]["containers"][0]


@pytest.mark.parametrize("description, cfg, train, expected", [
    ("nodes and GPUs become parallelism, completions and torchrun's ranks", k8s_config(nodes=3, gpus_per_node=2), [],
     {"parallelism": 3, "completions": 3, "command": ["torchrun", "--nnodes=3", "--nproc-per-node=2",
                                                      "--node-rank=$(NODE_RANK)", "--master-addr=$(MASTER_ADDR)",
                                                      "--master-port=$(MASTER_PORT)"],
      "gpu": "2"}),
    ("CPU pods run one process and ask for no GPU", k8s_config(gpus_per_node=0), [],
     {"parallelism": 1, "gpu": None, "nproc": "--nproc-per-node=1",
      "args": ["-m", "cmsdl.cli", "train", "trainer=ddp", "trainer.accelerator=cpu", "paths.data_dir=/data",
               "paths.log_dir=/outputs", "run_name=j", "resume=true"]}),
    ("the user's trainer wins; run_name and resume are fixed to the job", k8s_config(),
     ["trainer=gpu", "run_name=mine", "resume=false", "seed=7"],
     {"args": ["-m", "cmsdl.cli", "train", "trainer=gpu", "seed=7", "paths.data_dir=/data", "paths.log_dir=/outputs",
               "run_name=j", "resume=true"]}),
])
def test_builders(description: str, cfg: dict, train: list[str], expected: dict) -> None:
    [_, job] = render(cfg, train, name="j")
    container = container_of(job)
    for key in ("parallelism", "completions"):
        if key in expected:
            assert job["spec"][key] == expected[key], description
    if "command" in expected:
        assert container["command"] == expected["command"], description
    if "nproc" in expected:
        assert expected["nproc"] in container["command"], description
    if "gpu" in expected:
        assert container["resources"]["limits"].get("nvidia.com/gpu") == expected["gpu"], description
    if "args" in expected:
        assert container["args"] == expected["args"], description


def test_indexed_job_wiring_and_security_defaults() -> None:
    service, job = render(k8s_config(secret_env={"TOKEN": {"secret": "s", "key": "k"}}), TRAIN, name="wired",
                          sweep="sweep 1")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["spec"]["completionMode"] == "Indexed"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {LABEL_JOB: "wired"} and pod["subdomain"] == "wired"
    assert job["spec"]["template"]["metadata"]["labels"][LABEL_JOB] == "wired"
    env = {e["name"]: e for e in container["env"]}
    assert env["MASTER_ADDR"]["value"] == "wired-0.wired", "rank 0 is pod index 0, through the headless Service"
    assert COMPLETION_INDEX in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env["TOKEN"] == {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert all("value" not in e or e["name"] != "TOKEN" for e in container["env"])
    assert job["metadata"]["labels"][LABEL_EXPERIMENT] == "workflow_actions"
    assert job["metadata"]["labels"][LABEL_SWEEP] == "sweep-1"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
    assert {"mountPath": "/dev/shm", "name": "dshm"} in container["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "10Gi"}, "/tmp is bounded (k8s.tmp_size)"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_pytorchjob_flavour() -> None:
    [job] = render(k8s_config("pytorchjob", nodes=3, gpus_per_node=4), TRAIN, name="ptj")
    assert (job["apiVersion"], job["kind"]) == (PYTORCHJOB_API_VERSION, PYTORCHJOB_KIND)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert job["spec"]["nprocPerNode"] == "4"
    container = container_of(job)
    assert container["name"] == "pytorch" and container["command"] == ["torchrun"], "the operator sets PET_* for torchrun"
    assert "NODE_RANK" not in {e["name"] for e in container["env"]}


@pytest.mark.parametrize("changes, name, message", [
    ({}, "Bad_Name", r"k8s.name: 'Bad_Name' is not a valid job name"),
    ({}, "x" * 60, r"at most 52 characters"),
    ({}, "job\n", r"k8s.name: 'job\\n' is not a valid job name"),
    ({"namespace": "cms-ml\n"}, "ok", r"k8s.namespace: 'cms-ml\\n' is not a valid namespace"),
    ({"namespace": "CMS_ML"}, "ok", r"k8s.namespace: 'CMS_ML' is not a valid namespace"),
    ({"namespace": "n" * 64}, "ok", r"k8s.namespace: 'n+' is not a valid namespace"),
    ({"labels": {"cmsdl.io/job": "other"}}, "ok", r"k8s.labels: 'cmsdl.io/job' is reserved"),
    ({"labels": {"app.kubernetes.io/name": "x"}}, "ok", r"k8s.labels: 'app.kubernetes.io/name' is reserved"),
    ({"labels": {"node-role.kubernetes.io/x": "y"}}, "ok", r"'node-role.kubernetes.io/x' is reserved"),
    ({"labels": {"team ops": "x"}}, "ok", r"k8s.labels: 'team ops' is not a valid label key"),
    ({"labels": {"Example.org/team": "x"}}, "ok", r"'Example.org/team' is not a valid label key"),
    ({"labels": {"team": "comp ops"}}, "ok", r"k8s.labels.team: 'comp ops' is not a valid label value"),
    ({"labels": {"team": "x" * 64}}, "ok", r"k8s.labels.team: 'x+' is not a valid label value"),
    ({"labels": {"team": {"a": 1}}}, "ok", r"k8s.labels.team: \{'a': 1\} is not a valid label value"),
    ({"resources": {"limits": {"cpu": "8", "memory": "lots"}}}, "ok",
     r"k8s.resources.limits.memory: 'lots' is not a Kubernetes quantity"),
    ({"resources": {"limits": {"cpu": "-1", "memory": "1Gi"}}}, "ok", r"k8s.resources.limits.cpu: '-1' is not a"),
    ({"resources": {"limits": {"cpu": "8", "memory": "1gi"}}}, "ok", r"k8s.resources.limits.memory: '1gi' is not"),
    ({"resources": {"limits": {"cpu": "8", "memory": "1e99999"}}}, "ok", r"limits.memory: '1e99999' is not a"),
    ({"resources": {"limits": {"cpu": "8", "memory": "9" * 30}}}, "ok", r"limits.memory: '9+' is not a Kubernetes"),
    ({"resources": {"requests": {"memory": "64Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}}}, "ok",
     r"k8s.resources.requests.memory: 64Gi is more than the limit 32Gi"),
    ({"resources": {"limits": {"cpu": "8", "memory": "1Gi", "bad name!": "1"}}}, "ok",
     r"k8s.resources.limits: 'bad name!' is not a valid resource name"),
    ({"shm_size": "8 GB"}, "ok", r"k8s.shm_size: '8 GB' is not a Kubernetes quantity"),
    ({"tmp_size": None}, "ok", r"k8s.tmp_size: None is not a Kubernetes quantity"),
    ({"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": None, "memory": "1Gi"}}}, "ok",
     r"k8s.resources.limits.cpu: must be set"),
    ({"run_as_user": 0}, "ok", r"k8s.run_as_user: 0 \(root\) is not allowed"),
    ({"flavour": "mpijob"}, "ok", r"k8s.flavour: 'mpijob' is not one of indexed, pytorchjob"),
    ({"nodes": 0}, "ok", r"k8s.nodes: expected a whole number >= 1, got 0"),
    ({"secret_env": {"TOKEN": "plain-text"}}, "ok", r"k8s.secret_env.TOKEN: expected \{secret: <secret name>, key"),
])
def test_bad_k8s_settings_are_one_line_errors(changes: dict, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render(k8s_config(**changes), TRAIN, name=name)


def test_default_name_is_a_valid_job_name() -> None:
    [service, _] = render(k8s_config(), ["experiment=Event_3Class_With_A_Very_Long_Name_" + "x" * 40])
    assert service["metadata"]["name"].startswith("cmsdl-event-3class-with-a-very")
    assert len(service["metadata"]["name"]) <= 52


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay, nodes, gpus", [("single-gpu", 1, "1"), ("multi-node", 2, "4")])
def test_kustomize_overlays_build_and_validate(overlay: str, nodes: int, gpus: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay)], check=True,
                         capture_output=True, text=True).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out)}
    assert set(docs) == {"ConfigMap", "Service", "PersistentVolumeClaim", "Job"}
    for doc in yaml.safe_load_all(out):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    job = docs["Job"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == nodes
    assert f"--nnodes={nodes}" in container["command"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["envFrom"][0]["configMapRef"]["name"] == docs["ConfigMap"]["metadata"]["name"], \
        "kustomize links the generated ConfigMap"
    assert "experiment=$(EXPERIMENT)" in container["args"] and "EXPERIMENT" in docs["ConfigMap"]["data"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{docs['Service']['metadata']['name']}"


def test_checked_in_base_job_is_what_the_renderer_makes() -> None:
    """k8s/base/job.yaml is `cmsdl k8s render k8s.name=cmsdl-train` output plus the ConfigMap's experiment."""
    base = yaml.safe_load((REPO / "k8s" / "base" / "job.yaml").read_text())
    [_, rendered] = render(k8s_config(ttl_seconds_after_finished=None), ["experiment=$(EXPERIMENT)"], name="cmsdl-train")
    base_container, rendered_container = container_of(base), container_of(rendered)
    base_container.pop("envFrom")
    assert base_container == rendered_container
    assert base["spec"]["podFailurePolicy"] == rendered["spec"]["podFailurePolicy"]


def test_cli_render_writes_manifests_that_validate(tmp_path: Path) -> None:
    out = run_cmsdl("k8s", "render", "k8s=pytorchjob", "k8s.nodes=2", "k8s.name=rendered", f"out={tmp_path / 'job.yaml'}",
                    "experiment=workflow_actions", cwd=tmp_path)
    assert "wrote 1 manifests" in out.stdout
    [job] = yaml.safe_load_all((tmp_path / "job.yaml").read_text())
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    for template in pod_templates(job):
        kubernetes_validate.validate(template, VERSIONS[-1], strict=True)


def test_the_train_overrides_reach_the_manifests_as_arguments_not_module_state(tmp_path: Path) -> None:
    """cmsdl.k8s.app once kept the overrides in a module-level list that the Hydra task read back."""
    import cmsdl.k8s.app as app

    assert not [name for name, value in vars(app).items()
                if isinstance(value, (list, dict, set)) and not name.startswith("__")]
    hydra_args, workload = app.parse_arguments(["render", "k8s.nodes=1", f"out={tmp_path / 'job.yaml'}", *TRAIN])
    assert hydra_args == ["action=render", "k8s.nodes=1", f"out={tmp_path / 'job.yaml'}"]
    assert (workload.command, workload.overrides) == ("train", tuple(TRAIN))
    cfg = OmegaConf.create({"action": "render", "out": str(tmp_path / "job.yaml"), "follow": True,
                            "k8s": k8s_config(nodes=1)})
    app.run(cfg, workload)
    [_, job] = yaml.safe_load_all((tmp_path / "job.yaml").read_text())
    assert job["metadata"]["name"].startswith("cmsdl-workflow-actions-")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert set(TRAIN) <= set(args)
