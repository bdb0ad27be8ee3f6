"""Talking to a Kubernetes cluster: create, inspect, stream logs of and delete cmsdl training jobs.

Every API failure becomes one K8sError line naming the object, the namespace and what the server answered.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from cmsdl.errors import CmsdlError
from cmsdl.k8s.manifests import (COMPLETION_INDEX, JOB_KIND, LABEL_JOB, PYTORCHJOB_GROUP, PYTORCHJOB_KIND,
                                 PYTORCHJOB_PLURAL, PYTORCHJOB_VERSION, SERVICE_KIND)

log = logging.getLogger(__name__)
MASTER_REPLICA = "training.kubeflow.org/replica-type"


class K8sError(CmsdlError):
    """The cluster refused or could not be asked; the message keeps the server's reason."""


def server_message(err: ApiException) -> str:
    """The `message` of the Status object the server sent, else its HTTP reason."""
    try:
        return str(json.loads(err.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.reason or err.body or "no reason given")


def explain(err: Exception, verb: str, kind: str, name: str, namespace: str, host: str = "") -> K8sError:
    """One line for a failed API call: 403, 404, 409 and unreachable servers each get their own advice."""
    what = f"{kind} {name!r} in namespace {namespace!r}"
    if isinstance(err, ApiException):
        answer = server_message(err)
        if err.status == 401:
            return K8sError(f"cannot {verb} {what}: not authenticated (401: {answer}); "
                            "refresh your kubeconfig credentials")
        if err.status == 403:
            return K8sError(f"cannot {verb} {what}: forbidden (403: {answer}); ask for RBAC permission or use "
                            "another namespace (k8s.namespace=...)")
        if err.status == 404 and verb == "create" and kind == PYTORCHJOB_KIND:
            return K8sError(f"cannot create {what}: the cluster has no {PYTORCHJOB_KIND} resource (404: {answer}); "
                            "is the Kubeflow training operator installed? Otherwise use k8s.flavour=indexed")
        if err.status == 404:
            return K8sError(f"{what} not found (404: {answer})")
        if err.status == 409:
            return K8sError(f"cannot {verb} {what}: it already exists (409 AlreadyExists: {answer}); delete it with "
                            f"`cmsdl k8s delete k8s.name={name}` or choose another k8s.name")
        return K8sError(f"cannot {verb} {what}: the API server answered {err.status} {err.reason} ({answer})")
    reason = getattr(err, "reason", None) or err
    return K8sError(f"cannot {verb} {what}: the Kubernetes API server at {host} is unreachable ({reason}); "
                    "check `kubectl cluster-info` and your kubeconfig context")


def load_config() -> None:
    """The kubeconfig ($KUBECONFIG or ~/.kube/config), else the in-cluster service account, else a K8sError."""
    try:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)  # read now, not at import
        return
    except (ConfigException, OSError, TypeError) as err:
        first = err
    try:
        config.load_incluster_config()
    except ConfigException:
        where = [p for p in (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep) if p]
        missing = [p for p in where if not Path(p).expanduser().is_file()]
        reason = "no such file" if len(missing) == len(where) else str(first)
        raise K8sError(f"no Kubernetes configuration: cannot use the kubeconfig {os.pathsep.join(where)} ({reason}) "
                       "and this is not a pod with a service account; set KUBECONFIG or run "
                       "`kubectl config use-context ...`") from first


@dataclass
class Cluster:
    """API clients for one namespace; built from the kubeconfig unless clients are given."""

    namespace: str
    api: client.ApiClient | None = None

    def __post_init__(self) -> None:
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # no retry chatter before the error
        if self.api is None:
            load_config()
            self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, verb: str, kind: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            raise explain(err, verb, kind, name, self.namespace, self.api.configuration.host) from err

    def create(self, manifests: list[dict[str, Any]]) -> list[str]:
        """Create the manifests in order; returns 'Kind/name' of each."""
        created = []
        for m in manifests:
            kind, name = m["kind"], m["metadata"]["name"]
            if kind == SERVICE_KIND:
                self._call("create", kind, name, self.core.create_namespaced_service, self.namespace, m)
            elif kind == JOB_KIND:
                self._call("create", kind, name, self.batch.create_namespaced_job, self.namespace, m)
            elif kind == PYTORCHJOB_KIND:
                self._call("create", kind, name, self.custom.create_namespaced_custom_object, PYTORCHJOB_GROUP,
                           PYTORCHJOB_VERSION, self.namespace, PYTORCHJOB_PLURAL, m)
            else:
                raise K8sError(f"cannot create {kind} {name!r}: cmsdl only submits Service, Job and {PYTORCHJOB_KIND}")
            log.info("created %s/%s in namespace %s", kind, name, self.namespace)
            created.append(f"{kind}/{name}")
        return created

    def job_state(self, name: str, flavour: str) -> dict[str, Any]:
        """The job's counts and conditions, as the server reports them."""
        if flavour == "pytorchjob":
            job = self._call("read", PYTORCHJOB_KIND, name, self.custom.get_namespaced_custom_object,
                             PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, self.namespace, PYTORCHJOB_PLURAL, name)
            status = job.get("status") or {}
            conditions = [c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"]
            return {"kind": PYTORCHJOB_KIND, "name": name, "conditions": conditions,
                    "finished": any(c in ("Succeeded", "Failed") for c in conditions),
                    "succeeded": "Succeeded" in conditions}
        job = self._call("read", JOB_KIND, name, self.batch.read_namespaced_job, name, self.namespace)
        status = job.status
        conditions = [c.type for c in status.conditions or [] if c.status == "True"]
        return {"kind": JOB_KIND, "name": name, "active": status.active or 0, "succeeded_pods": status.succeeded or 0,
                "failed_pods": status.failed or 0, "conditions": conditions,
                "finished": any(c in ("Complete", "Failed") for c in conditions), "succeeded": "Complete" in conditions}

    def pods(self, name: str) -> list[dict[str, Any]]:
        """The job's pods: name, node rank, phase, node and restarts, ordered by rank."""
        found = self._call("list pods of", JOB_KIND, name, self.core.list_namespaced_pod, self.namespace,
                           label_selector=f"{LABEL_JOB}={name}")
        rows = []
        for pod in found.items:
            meta = pod.metadata
            index = (meta.annotations or {}).get(COMPLETION_INDEX) or (meta.labels or {}).get(
                "training.kubeflow.org/replica-index", "")
            if (meta.labels or {}).get(MASTER_REPLICA, "").lower() == "worker":
                index = str(int(index or 0) + 1)
            restarts = sum(s.restart_count for s in (pod.status.container_statuses or []))
            rows.append({"pod": meta.name, "rank": index, "phase": pod.status.phase, "node": pod.spec.node_name or "",
                         "restarts": restarts})
        return sorted(rows, key=lambda r: (r["rank"] == "", int(r["rank"] or 0), r["pod"]))

    def status(self, name: str, flavour: str) -> dict[str, Any]:
        return {**self.job_state(name, flavour), "pods": self.pods(name)}

    def rank0_pod(self, name: str) -> str:
        pods = [p for p in self.pods(name) if p["rank"] == "0"]
        if not pods:
            raise K8sError(f"job {name!r} in namespace {self.namespace!r} has no pod of rank 0 (yet); "
                           f"see `cmsdl k8s status k8s.name={name}`")
        running = [p for p in pods if p["phase"] in ("Running", "Succeeded", "Failed")]
        return (running or pods)[-1]["pod"]

    def logs(self, name: str, follow: bool = True) -> Iterator[str]:
        """Lines of the rank-0 pod's log, streamed while the pod runs when `follow`."""
        pod = self.rank0_pod(name)
        stream = self._call("read the log of", "Pod", pod, self.core.read_namespaced_pod_log, pod, self.namespace,
                            follow=follow, _preload_content=False)
        try:
            pending = b""
            for chunk in stream.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (line.decode(errors="replace") for line in lines)
            if pending:
                yield pending.decode(errors="replace")
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise explain(err, "read the log of", "Pod", pod, self.namespace, self.api.configuration.host) from err
        finally:
            stream.release_conn()

    def delete(self, name: str, flavour: str) -> list[str]:
        """Delete the job (and its pods) and, for the Indexed Job, its Service."""
        body = client.V1DeleteOptions(propagation_policy="Background")
        if flavour == "pytorchjob":
            self._call("delete", PYTORCHJOB_KIND, name, self.custom.delete_namespaced_custom_object, PYTORCHJOB_GROUP,
                       PYTORCHJOB_VERSION, self.namespace, PYTORCHJOB_PLURAL, name, body=body)
            return [f"{PYTORCHJOB_KIND}/{name}"]
        self._call("delete", JOB_KIND, name, self.batch.delete_namespaced_job, name, self.namespace, body=body)
        deleted = [f"{JOB_KIND}/{name}"]
        try:
            self.core.delete_namespaced_service(name, self.namespace, body=body)
            deleted.append(f"{SERVICE_KIND}/{name}")
        except ApiException as err:
            if err.status != 404:
                raise explain(err, "delete", SERVICE_KIND, name, self.namespace) from err
        return deleted
