"""The submission flow against a local stand-in for the Kubernetes API server (real HTTP on loopback, the real
`kubernetes` client and kubeconfig loading): create, status, logs, delete, and one clear message per error."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from omegaconf import OmegaConf

from cmsdl.k8s.cluster import Cluster, K8sError
from cmsdl.k8s.manifests import COMPLETION_INDEX, render
from conftest import REPO, run_cmsdl

_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)"
                   r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log))?$")
GROUPS = {"services": "", "pods": "", "jobs": "batch", "pytorchjobs": "kubeflow.org"}


def status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> dict:
    """A metav1.Status body, as the API server sends with every error."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": {"name": name, "kind": kind}, "code": code}


class FakeApiServer:
    """Answers the few endpoints cmsdl uses, keeps created objects, makes one pod per Indexed Job index.

    Namespace `forbidden` answers 403; `without_crds` makes pytorchjobs 404; `complete_on_read` reports every
    job finished (with `fail_jobs`: failed); pod logs of rank 0 end with the `metrics:` line that `cmsdl train` logs.
    """

    def __init__(self, complete_on_read: bool = False, without_crds: bool = False, fail_jobs: bool = False) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.complete_on_read = complete_on_read
        self.without_crds = without_crds
        self.fail_jobs = fail_jobs
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "alice", "user": {"token": "secret-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "alice"}}],
        }))
        return path

    def _pods_for(self, job: dict, ns: str) -> None:
        name = job["metadata"]["name"]
        if job["kind"] == "Job":
            template, count = job["spec"]["template"], job["spec"]["completions"]
            specs = [(f"{name}-{i}-x7k2p", {COMPLETION_INDEX: str(i)}, {}) for i in range(count)]
        else:
            replicas = job["spec"]["pytorchReplicaSpecs"]
            template = replicas["Master"]["template"]
            specs = [(f"{name}-master-0", {}, {"training.kubeflow.org/replica-type": "master",
                                                "training.kubeflow.org/replica-index": "0"})]
            specs += [(f"{name}-worker-{i}", {}, {"training.kubeflow.org/replica-type": "worker",
                                                   "training.kubeflow.org/replica-index": str(i)})
                      for i in range(replicas.get("Worker", {}).get("replicas", 0))]
        for pod_name, annotations, extra in specs:
            self.objects[(ns, "pods", pod_name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": ns, "annotations": annotations,
                             "labels": {**template["metadata"]["labels"], **extra, "job-name": name}},
                "spec": {**template["spec"], "nodeName": f"gpu-node-{len(self.objects)}"},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "pytorch", "restartCount": 0, "ready": True, "image": "x", "imageID": "",
                     "state": {"running": {}}}]},
            }

    def _job_view(self, job: dict, ns: str) -> dict:
        pods = [p for (n, plural, _), p in self.objects.items()
                if n == ns and plural == "pods" and p["metadata"]["labels"].get("job-name") == job["metadata"]["name"]]
        if self.complete_on_read:
            for pod in pods:
                pod["status"]["phase"] = "Failed" if self.fail_jobs else "Succeeded"
        done = all(p["status"]["phase"] == "Succeeded" for p in pods)
        now = "2026-01-01T10:00:00Z"
        if job["kind"] == "Job" and self.fail_jobs and self.complete_on_read:
            return {**job, "status": {"failed": len(pods), "startTime": now, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": now}]}}
        if job["kind"] == "Job":
            conditions = [{"type": "Complete", "status": "True", "lastTransitionTime": now}] if done else []
            return {**job, "status": {"active": 0 if done else len(pods), "succeeded": len(pods) if done else 0,
                                      "conditions": conditions, "startTime": now}}
        conditions = [{"type": "Running", "status": "False" if done else "True"}]
        return {**job, "status": {"conditions": conditions + ([{"type": "Succeeded", "status": "True"}] if done else [])}}

    def log_of(self, pod: dict) -> str:
        args = " ".join(pod["spec"]["containers"][0]["args"])
        lr = float(re.search(r"model\.optimizer\.lr=([\d.e-]+)", args).group(1)) if "optimizer.lr=" in args else 1e-3
        return (f"Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2\nEpoch 0: train/loss=0.69\n"
                f"[2026-01-01 10:00:00][cmsdl.train][INFO] - metrics: test/auroc={0.8 + lr:.4f}, val/loss={1 - lr:.4f}\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, code: int, body: dict | str) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def route(self, method: str) -> None:
                url = urlparse(self.path)
                server.requests.append((method, url.path))
                if self.headers.get("Authorization") != "Bearer secret-token":
                    return self.reply(401, status(401, "Unauthorized", "Unauthorized"))
                m = _PATH.match(url.path)
                if not m:
                    return self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
                ns, plural, name, sub = m["ns"], m["plural"], m["name"], m["sub"]
                group = GROUPS.get(plural, "?")
                resource = f"{plural}.{group}" if group else plural
                if ns == "forbidden":
                    verb = {"POST": "create", "GET": "get" if name else "list", "DELETE": "delete"}[method]
                    return self.reply(403, status(403, "Forbidden", f'{resource} is forbidden: User "alice" cannot {verb} '
                                                                     f'resource "{plural}" in API group "{group}" in the '
                                                                     f'namespace "{ns}"', name, plural))
                if plural == "pytorchjobs" and server.without_crds:
                    return self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
                key = (ns, plural, name)
                if method == "POST":
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    key = (ns, plural, body["metadata"]["name"])
                    if key in server.objects:
                        return self.reply(409, status(409, "AlreadyExists", f'{resource} "{key[2]}" already exists',
                                                      key[2], plural))
                    server.objects[key] = body
                    if plural in ("jobs", "pytorchjobs"):
                        server._pods_for(body, ns)
                    return self.reply(201, body)
                if method == "GET" and name is None:
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
                    items = [o for (n, p, _), o in server.objects.items() if n == ns and p == plural
                             and all(o["metadata"]["labels"].get(k) == v for k, v in want.items())]
                    return self.reply(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                if key not in server.objects:
                    return self.reply(404, status(404, "NotFound", f'{resource} "{name}" not found', name, plural))
                if method == "DELETE":
                    gone = server.objects.pop(key)
                    if plural == "services":  # the API answers a Service's deletion with the Service
                        return self.reply(200, gone)
                    return self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                                            "details": {"name": name, "kind": plural}})
                if sub == "log":
                    return self.reply(200, server.log_of(server.objects[key]))
                obj = server.objects[key]
                return self.reply(200, server._job_view(obj, ns) if plural in ("jobs", "pytorchjobs") else obj)

            def do_GET(self) -> None:
                self.route("GET")

            def do_POST(self) -> None:
                self.route("POST")

            def do_DELETE(self) -> None:
                self.route("DELETE")

        return Handler

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
        yield server


def k8s_config(**changes: object) -> dict:
    cfg = OmegaConf.load(REPO / "configs" / "k8s" / "default.yaml")
    cfg.merge_with(changes)
    return OmegaConf.to_container(cfg)


def test_create_status_logs_delete_of_an_indexed_job(api: FakeApiServer) -> None:
    cluster = Cluster("physics")
    created = cluster.create(render(k8s_config(nodes=2), ["experiment=workflow_actions"], name="lhc-run"))
    assert created == ["Service/lhc-run", "Job/lhc-run"]
    assert ("POST", "/api/v1/namespaces/physics/services") in api.requests
    state = cluster.status("lhc-run", "indexed")
    assert state["conditions"] == [] and state["active"] == 2
    assert [(p["rank"], p["phase"]) for p in state["pods"]] == [("0", "Running"), ("1", "Running")]
    lines = list(cluster.logs("lhc-run", follow=True))
    assert lines[0].startswith("Initializing distributed: GLOBAL_RANK: 0") and "metrics:" in lines[-1]
    assert any(path.endswith("/pods/lhc-run-0-x7k2p/log") for _, path in api.requests), "rank 0's log is read"
    assert cluster.delete("lhc-run", "indexed") == ["Job/lhc-run", "Service/lhc-run"]
    assert ("physics", "jobs", "lhc-run") not in api.objects


def test_pytorchjob_flavour_is_created_and_its_master_is_rank_0(api: FakeApiServer) -> None:
    cluster = Cluster("physics")
    manifests = render(k8s_config(nodes=3, flavour="pytorchjob"), [], name="ptj")
    assert cluster.create(manifests) == ["PyTorchJob/ptj"]
    assert ("POST", "/apis/kubeflow.org/v1/namespaces/physics/pytorchjobs") in api.requests
    assert [p["rank"] for p in cluster.pods("ptj")] == ["0", "1", "2"]
    assert cluster.rank0_pod("ptj") == "ptj-master-0"
    assert cluster.delete("ptj", "pytorchjob") == ["PyTorchJob/ptj"]


@pytest.mark.parametrize("what, call, expected", [
    ("409 AlreadyExists", lambda c: c.create(render(k8s_config(), [], name="dup")),
     r"cannot create Service 'dup' in namespace 'physics': it already exists \(409 AlreadyExists: "
     r"services \"dup\" already exists\); delete it with `cmsdl k8s delete k8s.name=dup`"),
    ("404 status", lambda c: c.status("nope", "indexed"),
     r"^Job 'nope' in namespace 'physics' not found \(404: jobs.batch \"nope\" not found\)$"),
    ("404 delete", lambda c: c.delete("nope", "indexed"), r"^Job 'nope' in namespace 'physics' not found"),
])
def test_api_errors_are_one_line_with_the_servers_reason(api: FakeApiServer, what: str, call, expected: str) -> None:
    cluster = Cluster("physics")
    cluster.create(render(k8s_config(), [], name="dup"))
    with pytest.raises(K8sError, match=expected) as err:
        call(cluster)
    assert "\n" not in str(err.value)


def test_forbidden_namespace_says_who_cannot_do_what(api: FakeApiServer) -> None:
    with pytest.raises(K8sError, match=r"cannot create Service 'x' in namespace 'forbidden': forbidden \(403: "
                                       r"services is forbidden: User \"alice\" cannot create .*ask for RBAC"):
        Cluster("forbidden").create(render(k8s_config(namespace="forbidden"), [], name="x"))


def test_missing_training_operator_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApiServer(without_crds=True) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
        with pytest.raises(K8sError, match="no PyTorchJob resource .* training operator installed"):
            Cluster("physics").create(render(k8s_config(flavour="pytorchjob"), [], name="ptj"))


def test_unreachable_cluster_and_missing_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApiServer() as server:
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # the server is gone: nothing listens on its port
    with pytest.raises(K8sError, match=r"cannot read Job 'j' in namespace 'ns': the Kubernetes API server at "
                                       r"http://127.0.0.1:\d+ is unreachable .*kubectl cluster-info"):
        Cluster("ns").status("j", "indexed")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(K8sError, match=r"no Kubernetes configuration: cannot use the kubeconfig "
                                       r".*missing-kubeconfig \(no such file\)"):
        Cluster("ns")


def test_cli_submit_status_logs_delete(api: FakeApiServer, tmp_path: Path, workflows_file: Path) -> None:
    common = ["k8s.namespace=physics", "k8s.name=cli-job"]
    out = run_cmsdl("k8s", "submit", *common, "k8s=multi_node", "experiment=workflow_actions",
                    "model.optimizer.lr=3e-4", cwd=tmp_path)
    assert "submitted Service/cli-job, Job/cli-job to namespace physics" in out.stdout
    job = api.objects[("physics", "jobs", "cli-job")]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[3:] == ["experiment=workflow_actions", "model.optimizer.lr=3e-4", "trainer=ddp",
                        "paths.data_dir=/data", "paths.log_dir=/outputs", "run_name=cli-job", "resume=true"]
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 2
    again = run_cmsdl("k8s", "submit", *common, cwd=tmp_path, check=False)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith(
        "error: cannot create Service 'cli-job' in namespace 'physics': it already exists (409 AlreadyExists")
    status_out = run_cmsdl("k8s", "status", *common, cwd=tmp_path).stdout
    assert re.search(r"cli-job-1-x7k2p\s+1\s+Running", status_out), status_out
    assert "metrics: test/auroc=" in run_cmsdl("k8s", "logs", *common, cwd=tmp_path).stdout
    assert "deleted Job/cli-job, Service/cli-job" in run_cmsdl("k8s", "delete", *common, cwd=tmp_path).stdout
    missing = run_cmsdl("k8s", "status", *common, cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "error: Job 'cli-job' in namespace 'physics' not found (404" in missing.stderr


def test_rejected_credentials_are_401(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApiServer() as server:
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
        kubeconfig.write_text(kubeconfig.read_text().replace("secret-token", "expired-token"))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        with pytest.raises(K8sError, match=r"cannot read Job 'j' in namespace 'ns': not authenticated \(401: "
                                           r"Unauthorized\); refresh your kubeconfig credentials"):
            Cluster("ns").status("j", "indexed")


@pytest.mark.parametrize("args, message", [
    (["status", "k8s.name=Bad_Name"], "error: k8s.name: 'Bad_Name' is not a valid job name"),
    (["logs", "k8s.name=ok-job", "k8s.namespace=Physics"], "error: k8s.namespace: 'Physics' is not a valid namespace"),
    (["delete", "k8s.name=ok-job", "k8s.namespace=a.b"], "error: k8s.namespace: 'a.b' is not a valid namespace"),
    (["submit", "k8s.name=ok-job", "k8s.namespace=physics", "k8s.resources.limits.memory=lots"],
     "error: k8s.resources.limits.memory: 'lots' is not a Kubernetes quantity"),
    (["submit", "k8s.name=ok-job", "k8s.namespace=physics", "++k8s.labels={cmsdl.io/job: other}"],
     "error: k8s.labels: 'cmsdl.io/job' is reserved"),
])
def test_cli_refuses_bad_settings_before_calling_the_cluster(api: FakeApiServer, tmp_path: Path, args: list[str],
                                                             message: str) -> None:
    proc = run_cmsdl("k8s", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
    assert not [key for key in api.objects if key[0] == "physics" and key[2] == "ok-job"], "nothing was created"


def test_fanout_submit_status_and_delete(api: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cmsdl k8s submit predict ...`: one Indexed Job, no Service; status lists a pod per shard; delete removes it."""
    import cmsdl.k8s.app as app

    workload = app.Workload("predict", ("model=/data/m.onnx", "input=/data/in/*.npy", "out=/outputs/p.csv"),
                            out="/outputs/p.csv")
    cfg = OmegaConf.create({"action": "submit", "out": None, "follow": False,
                            "k8s": k8s_config(name="scores", namespace="physics", fanout={"completions": 3})})
    app.run(cfg, workload)
    assert "submitted Job/scores to namespace physics" in capsys.readouterr().out
    assert [r for r in api.requests if r[0] == "POST"] == [("POST", "/apis/batch/v1/namespaces/physics/jobs")]
    args = api.objects[("physics", "jobs", "scores")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["shard.index=$(JOB_COMPLETION_INDEX)", "shard.count=3"]
    cluster = Cluster("physics")
    assert [p["rank"] for p in cluster.status("scores", "indexed")["pods"]] == ["0", "1", "2"]
    assert cluster.delete("scores", "indexed") == ["Job/scores"], "no Service to delete"
