"""Alizé's Serve applications on a Ray cluster, for operators and for the gateway at start.

Serve's application names are global to a cluster (a driver's Ray namespace does not separate
them), so each llama.cpp deployment's application is named :func:`application_name`:
``NAMESPACE.DEPLOYMENT`` (``alize.smollm2-135m-instruct``), and the applications of one Alizé
namespace are those whose name starts with ``NAMESPACE.``.

A gateway stopped normally deletes its applications, unless another gateway still uses one:
each gateway claims the applications it deploys under its Ray job (a key per application and
job in Ray's internal key-value store, :func:`claim`), and at its stop deletes only those that
no living job claims (:func:`release`). A job dies with its driver, so a claim left by a killed
gateway keeps nothing alive. One killed outright (``kill -9``, a lost
node) leaves them running, replicas and CPUs included. The next gateway with the same deployment
reuses its application: :mod:`alize.engines.ray` redeploys it under the same name and the same
version, so Serve keeps the running replicas (no reload, no second set of replicas); with a
changed replica config (another ``parallel``, context or model file) Serve replaces them in
place, never beside them. An application no deployment claims any more (a deployment renamed
or deleted while its gateway was down) is listed at ``alize serve --ray`` start and by
``alize ray apps``, and removed with ``alize ray delete``.

These functions need the cluster joined (:func:`alize.engines.ray.connect`); they block, and
import Ray only when called.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

#: between the namespace and the deployment in an application's name
SEPARATOR = "."


def application_name(namespace: str, deployment: str) -> str:
    """The Serve application of ``deployment`` in Alizé's ``namespace``."""
    return f"{namespace}{SEPARATOR}{deployment}"


@dataclass(frozen=True, slots=True)
class ServeApp:
    """One of Alizé's Serve applications as the cluster's Serve controller reports it."""

    name: str
    #: the Alizé deployment it serves (the name without the namespace)
    deployment: str
    #: Serve's application status: RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY, DELETING...
    status: str
    #: replicas by state (RUNNING, STARTING, STOPPING...), over the application's deployments
    replicas: dict[str, int]
    #: when it was last deployed (Unix seconds)
    deployed_at: float
    message: str = ""

    @property
    def running(self) -> int:
        return self.replicas.get("RUNNING", 0)


def _serve() -> Any:
    return importlib.import_module("ray.serve")


def list_apps(namespace: str) -> list[ServeApp]:
    """Alizé's applications in ``namespace``, by name; none when Serve is not running."""
    prefix = application_name(namespace, "")
    apps = []
    for name, app in sorted(_serve().status().applications.items()):
        if not name.startswith(prefix):
            continue
        replicas: dict[str, int] = {}
        for deployment in app.deployments.values():
            for state, count in deployment.replica_states.items():
                key = str(getattr(state, "value", state))
                replicas[key] = replicas.get(key, 0) + int(count)
        apps.append(
            ServeApp(
                name=name,
                deployment=name[len(prefix) :],
                status=str(getattr(app.status, "value", app.status)),
                replicas=replicas,
                deployed_at=float(app.last_deployed_time_s or 0.0),
                message=str(app.message or ""),
            )
        )
    return apps


#: the prefix of the claims on one application, in Ray's internal key-value store
CLAIMS = "alize-claims/"


def _claims(application: str) -> str:
    return f"{CLAIMS}{application}/"


def claim(namespace: str, application: str) -> None:
    """Say that this process's Ray job uses ``application`` (until :func:`release`)."""
    ray: Any = importlib.import_module("ray")
    kv: Any = importlib.import_module("ray.experimental.internal_kv")
    job = ray.get_runtime_context().get_job_id()
    kv._internal_kv_put(_claims(application) + job, b"1", overwrite=True, namespace=namespace)


def release(namespace: str, application: str) -> list[str]:
    """Withdraw this job's claim on ``application``; returns the other living jobs that still
    claim it (the application must then stay), forgetting the claims of dead ones."""
    ray: Any = importlib.import_module("ray")
    kv: Any = importlib.import_module("ray.experimental.internal_kv")
    state: Any = importlib.import_module("ray._private.state")
    prefix = _claims(application)
    mine = ray.get_runtime_context().get_job_id()
    kv._internal_kv_del(prefix + mine, namespace=namespace)
    alive = {str(job["JobID"]) for job in state.jobs() if not job.get("IsDead")}
    others = []
    for key in kv._internal_kv_list(prefix, namespace=namespace):
        job = (key.decode() if isinstance(key, bytes) else str(key))[len(prefix) :]
        if job in alive:
            others.append(job)
        else:
            kv._internal_kv_del(prefix + job, namespace=namespace)
    return others


def delete_app(name: str) -> None:
    """Delete an application and stop its replicas (blocks until they are stopped)."""
    _serve().delete(name)
