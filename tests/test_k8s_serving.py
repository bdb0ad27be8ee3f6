"""k8s/serving: the kustomize overlays build with `kubectl kustomize`; the Deployment, Service and claim validate
against the real Kubernetes schemas, the InferenceService against the KServe CRD's own OpenAPI schema (kept in
tests/fixtures, taken unchanged from kserve/kserve); broken manifests fail; and the Deployment's command line,
token variable and probe paths are what `cmsdl serve` reads and answers."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import toy_onnx
import yaml

from cmsdl.config import compose_run_config
from cmsdl.errors import ConfigError
from cmsdl.serve.server import check_write_access
from conftest import REPO
from test_k8s_manifests import VERSIONS

SERVING = REPO / "k8s" / "serving"
KSERVE_SCHEMA = REPO / "tests" / "fixtures" / "kserve_v1beta1_inferenceservice.schema.json"
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def build(overlay: str) -> dict[str, dict]:
    """`kubectl kustomize k8s/serving/overlays/<overlay>`, by kind."""
    out = subprocess.run(["kubectl", "kustomize", str(SERVING / "overlays" / overlay)], check=True,
                         capture_output=True, text=True).stdout
    docs = list(yaml.safe_load_all(out))
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind"
    return by_kind


def strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation (kubectl's default): an unknown
    field is an error, except where the schema preserves unknown fields or declares additionalProperties."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and \
            not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def kserve_validator() -> jsonschema.Validator:
    return jsonschema.Draft7Validator(strict(json.loads(KSERVE_SCHEMA.read_text())))


def validate_inference_service(isvc: dict, validator: jsonschema.Validator) -> None:
    """The InferenceService against the CRD schema; its metadata against the Kubernetes ObjectMeta schema."""
    validator.validate(isvc)
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": isvc["metadata"]},
                                 VERSIONS[-1], strict=True)


def test_the_fixture_is_kserves_own_schema_and_small() -> None:
    schema = json.loads(KSERVE_SCHEMA.read_text())
    assert "kserve/kserve" in schema["$comment"] and "openAPIV3Schema" in schema["$comment"]
    predictor = schema["properties"]["spec"]["properties"]["predictor"]["properties"]
    assert {"storageUri", "modelFormat", "runtime", "protocolVersion"} <= set(predictor["model"]["properties"])
    assert KSERVE_SCHEMA.stat().st_size < 1_500_000


@needs_kubectl
@pytest.mark.parametrize("version", VERSIONS)
def test_cmsdl_serve_overlay_validates_against_the_kubernetes_schemas(version: str) -> None:
    docs = build("cmsdl-serve")
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)


@needs_kubectl
def test_kserve_overlay_validates_against_the_crd_schema(kserve_validator: jsonschema.Validator) -> None:
    docs = build("kserve")
    assert set(docs) == {"PersistentVolumeClaim", "InferenceService"}
    kubernetes_validate.validate(docs["PersistentVolumeClaim"], VERSIONS[-1], strict=True)
    validate_inference_service(docs["InferenceService"], kserve_validator)


def set_path(doc: dict, path: str, value: Any) -> dict:
    """A copy of `doc` with the dotted `path` set (a list index as a number); value None deletes the key."""
    doc = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = doc
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


def rename(doc: dict, path: str, new: str) -> dict:
    *parents, last = path.split(".")
    doc = copy.deepcopy(doc)
    node = doc
    for key in parents:
        node = node[int(key) if key.isdigit() else key]
    node[new] = node.pop(last)
    return doc


CONTAINER = "spec.template.spec.containers.0"


@needs_kubectl
@pytest.mark.parametrize("mutate", [
    lambda d: rename(d, f"{CONTAINER}.readinessProbe", "readinesProbe"),
    lambda d: rename(d, "spec.template.spec.securityContext", "securityContexts"),
    lambda d: set_path(d, "spec.replicas", "two"),
    lambda d: set_path(d, f"{CONTAINER}.ports.0.containerPort", "8083"),
    lambda d: set_path(d, f"{CONTAINER}.env.2.valueFrom.secretKeyRef.key", None),
    lambda d: set_path(d, f"{CONTAINER}.livenessProbe.httpGet.path", ["/v2/health/live"]),
], ids=["misspelled probe", "misspelled securityContext", "replicas a word", "port as text",
        "secret reference without key", "probe path a list"])
def test_a_broken_deployment_fails_validation(mutate: Any) -> None:
    deployment = build("cmsdl-serve")["Deployment"]
    kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(mutate(deployment), VERSIONS[-1], strict=True)


PREDICTOR = "spec.predictor"


@needs_kubectl
@pytest.mark.parametrize("mutate", [
    lambda d: rename(d, f"{PREDICTOR}.model.storageUri", "storageURI"),
    lambda d: rename(d, f"{PREDICTOR}.model", "models"),
    lambda d: set_path(d, f"{PREDICTOR}.minReplicas", "1"),
    lambda d: set_path(d, f"{PREDICTOR}.model.modelFormat.name", None),
    lambda d: set_path(d, f"{PREDICTOR}.model.resources.limits", ["cpu"]),
    lambda d: set_path(d, f"{PREDICTOR}.model.securityContext.capabilities.drop", "ALL"),
    lambda d: set_path(d, "spec", {"predictor": {"model": {"modelFormat": {"name": "onnx"}}}, "unknown": {}}),
], ids=["misspelled storageUri", "models for model", "minReplicas as text", "modelFormat without its name",
        "limits a list", "drop not a list", "unknown spec field"])
def test_a_broken_inference_service_fails_validation(mutate: Any, kserve_validator: jsonschema.Validator) -> None:
    isvc = build("kserve")["InferenceService"]
    with pytest.raises(jsonschema.ValidationError):
        kserve_validator.validate(mutate(isvc))


@needs_kubectl
def test_both_overlays_serve_the_repository_on_the_same_claim() -> None:
    serve, kserve = build("cmsdl-serve"), build("kserve")
    claim = serve["PersistentVolumeClaim"]["metadata"]["name"]
    assert kserve["PersistentVolumeClaim"] == serve["PersistentVolumeClaim"]
    model = kserve["InferenceService"]["spec"]["predictor"]["model"]
    assert (model["modelFormat"]["name"], model["runtime"], model["protocolVersion"]) == \
        ("onnx", "kserve-tritonserver", "v2")
    assert model["storageUri"].startswith(f"pvc://{claim}/")
    pod = serve["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    args = dict(a.split("=", 1) for a in container["args"][1:])
    models = PurePosixPath(args["models"])
    [mount] = [m for m in mounts if PurePosixPath(m) in models.parents]
    assert mounts[mount]["persistentVolumeClaim"]["claimName"] == claim
    assert str(models.relative_to(mount)) == model["storageUri"].removeprefix(f"pvc://{claim}/"), \
        "cmsdl serve and Triton read the same folder of the claim"


@needs_kubectl
def test_deployment_wiring_and_security_defaults() -> None:
    docs = build("cmsdl-serve")
    deployment, service = docs["Deployment"], docs["Service"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    args = dict(a.split("=", 1) for a in container["args"][1:])
    assert ports[service["spec"]["ports"][0]["targetPort"]] == int(args["port"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert any(m["mountPath"] == "/tmp" and "emptyDir" in v for m in container["volumeMounts"]
               for v in pod["volumes"] if v["name"] == m["name"])
    token = [e for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert len(token) == 1 and "value" not in token[0], "the token only as a Secret reference"


@needs_kubectl
def test_cmsdl_serve_reads_the_deployments_command_line_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's arguments compose with configs/serve.yaml and its token variable is the one serve.yaml reads;
    without the Secret's value, cmsdl serve would refuse to listen on 0.0.0.0."""
    from hydra.core.global_hydra import GlobalHydra

    [container] = build("cmsdl-serve")["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["cmsdl"] and container["args"][0] == "serve"
    [token] = [e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    monkeypatch.setenv(token, "from-the-secret")
    try:
        cfg = compose_run_config("serve", container["args"][1:])
    finally:
        GlobalHydra.instance().clear()
    assert cfg.token == "from-the-secret" and cfg.host == "0.0.0.0"
    check_write_access(cfg.host, cfg.token, bool(cfg.read_only))
    with pytest.raises(ConfigError):
        check_write_access(cfg.host, None, bool(cfg.read_only))


def test_cmsdl_serve_answers_the_probe_paths(tmp_path: Path) -> None:
    from test_serve import running

    deployment = yaml.safe_load((SERVING / "overlays" / "cmsdl-serve" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    (tmp_path / "models").mkdir()
    toy_onnx.write(tmp_path / "models" / "top.onnx", toy_onnx.top_model(4))
    with running(tmp_path / "models", read_only=True) as client:
        for path in sorted(paths):
            status, _ = client.call_text("GET", path)
            assert status == 200, path
