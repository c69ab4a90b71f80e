"""The Ray engine: a deployment's llama.cpp replicas as one Ray Serve deployment across a cluster.

``alize serve --ray ADDRESS`` (``ALIZE_RAY__ADDRESS``) makes every llama.cpp deployment a Serve
application named ``NAMESPACE.DEPLOYMENT`` (:mod:`alize.engines.ray_apps`), whose replicas are
:class:`~alize.engines.ray_replica.LlamaCppReplica` (Alizé's own llama.cpp worker; ``ray.serve.llm``
needs vLLM and CUDA). The gateway keeps keys, limits, queueing and metering, and calls the
replicas through a Serve handle, streaming:

* the replica count is ``replicas``, or autoscaled between ``min_replicas`` and
  ``max_replicas`` on ``target_ongoing_requests``, changed live by :meth:`RayEngine.rescale`
  (the application is redeployed under the same version, so Serve only adds or removes
  replicas); ``max_ongoing_requests`` is the deployment's ``parallel`` plus room for token
  counts, and the gateway's fair queue admits no more sequences than there are slots;
* Serve routes each call with :class:`~alize.engines.ray_router.AffinityRouter` (prefix
  affinity, else the least busy replica: the rule of the local router) and replaces a replica
  whose health check fails or whose actor dies;
* an application of the same name left running (by a gateway killed outright) is redeployed
  in place: the same version keeps its replicas, a changed replica config replaces them;
* a replica that dies before it took a request is retried (Serve routes the retry elsewhere);
  one that dies mid-stream ends the stream with 503 ``engine_unavailable`` (a final SSE error
  event), never a silent end; the gateway's errors raised in a replica arrive as themselves;
* closing the stream cancels the Serve call, which closes the replica's llama.cpp stream and
  frees its slot.

Engine options (strings, from :func:`alize.deployments.specs.ray_options`): ``address``,
``namespace``, ``application`` (the deployment's name), ``num_cpus``, ``health_check_period_s``,
and ``affinity`` (``false``: Serve's own router instead of Alizé's; for bench/routing.py).

Ray is an optional extra (``pip install alize[ray]``) and is imported only when a deployment
loads or :func:`connect` runs. GPU nodes serve vLLM through ``ray.serve.llm``'s OpenAI app,
reached as a remote card (docs/operations.md#ray-cluster).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import socket
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from types import ModuleType
from typing import Any

from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.affinity import affinity_slack
from alize.engines.base import Engine, EngineConfig, ReplicaScaling, loaded
from alize.engines.ray_apps import application_name, claim, list_apps, release
from alize.engines.ray_replica import LlamaCppReplica
from alize.errors import (
    AlizeError,
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    QueueFullError,
)

log = logging.getLogger(__name__)

#: the Serve deployment's name inside each application
DEPLOYMENT = "llamacpp"
#: calls a replica takes beside its slots (token counts, health): they need no slot
CONTROL_CALLS = 2
#: how often a call is sent again when its replica died before taking it
RETRIES_BEFORE_FIRST_BYTE = 2


class RayUnavailableError(EngineUnavailableError):
    """The Ray cluster cannot be used: not installed, unreachable, or refused the deployment."""

    default_code = "ray_unavailable"


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RayUnavailableError(
            "Ray Serve is not installed; install it with: pip install 'alize[ray]'", retry_after=60
        ) from None


def connect(address: str, *, namespace: str, timeout_s: float) -> None:
    """Join the Ray cluster at ``address`` (``HOST:PORT`` of the head, or ``auto``) as a driver,
    once per process; :class:`RayUnavailableError` saying why when it cannot."""
    ray: Any = _import("ray")
    _import("ray.serve")
    if ray.is_initialized():
        return
    if address != "auto":
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise RayUnavailableError(f"'{address}' is not a Ray address (HOST:PORT or auto)", retry_after=60)
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        except OSError as exc:
            raise RayUnavailableError(
                f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}); "
                "start one with `ray start --head` or check --ray",
                retry_after=30,
            ) from None
    # ray.init waits without end for a GCS that accepts connections but never answers (another
    # service on the port, a half-started head): it runs in a thread given ``timeout_s``
    failures: list[BaseException] = []

    def join() -> None:
        try:
            ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=join, name="ray-init", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RayUnavailableError(
            f"nothing at {address} answered as a Ray cluster within {timeout_s:g} s", retry_after=30
        )
    if failures:
        failure = failures[0]
        if not isinstance(failure, ConnectionError | RuntimeError | ValueError):
            raise failure
        raise RayUnavailableError(f"cannot join the Ray cluster at {address}: {failure}", retry_after=30)
    log.info("joined the Ray cluster at %s (namespace %s)", address, namespace)


def scaling_options(scaling: ReplicaScaling, parallel: int) -> dict[str, Any]:
    """Serve's ``num_replicas`` or ``autoscaling_config`` for ``scaling``."""
    if not scaling.autoscaled:
        return {"num_replicas": scaling.replicas}
    bottom = scaling.min_replicas if scaling.min_replicas is not None else 1
    config: dict[str, Any] = {
        "min_replicas": bottom,
        "max_replicas": scaling.max_replicas,
        "initial_replicas": min(max(bottom, scaling.replicas), scaling.most),
        "target_ongoing_requests": scaling.target_ongoing_requests or max(1.0, parallel / 2),
    }
    return {"autoscaling_config": config}


class RayEngine(Engine):
    def __init__(self, config: EngineConfig) -> None:
        if config.model_path is None:
            raise InvalidRequestError("a llama.cpp deployment needs a GGUF model file", param="model_path")
        opts = config.options
        self._config = config
        self._address = opts.get("address", "auto")
        self._namespace = opts.get("namespace", "alize")
        self._application = application_name(
            self._namespace, opts.get("application") or config.model_path.stem
        )
        self._num_cpus = float(opts.get("num_cpus", "1"))
        self._health_period_s = float(opts.get("health_check_period_s", "5"))
        #: off: Serve's own router (the less busy of two at random; bench/routing.py compares)
        self._affinity = opts.get("affinity", "true") != "false"
        self._scaling = config.scaling or ReplicaScaling()
        self._handle: Any = None
        self._info: EngineInfo | None = None
        self._lock = asyncio.Lock()
        #: sequences each Serve replica (``host:pid``) has started, as this gateway saw them
        self.served_by: dict[str, int] = {}

    @property
    def info(self) -> EngineInfo:
        return loaded(self._info)

    def _replica_config(self) -> EngineConfig:
        """What each replica's llama.cpp engine runs: this config, local, on its Ray CPUs."""
        return replace(
            self._config, kind="llamacpp", options={}, scaling=None, threads=max(1, int(self._num_cpus))
        )

    def _deploy(self, scaling: ReplicaScaling) -> Any:
        """(Re)deploy the application; blocks until its replicas run. Same replica config, same
        version: a new replica count or autoscaling bound only adds or removes replicas."""
        serve: Any = _import("ray.serve")
        config: Any = _import("ray.serve.config")
        from alize.engines.ray_router import AffinityRouter  # imports Ray

        replica = self._replica_config()
        serve.start(proxy_location="Disabled")  # no HTTP ingress: the gateway calls handles
        parallel = self._config.parallel
        routing: dict[str, Any] = {}
        if self._affinity:
            routing["request_router_config"] = config.RequestRouterConfig(
                request_router_class=AffinityRouter,
                request_router_kwargs={"slack": affinity_slack(parallel), "slots": parallel},
            )
        deployment = serve.deployment(LlamaCppReplica).options(
            name=DEPLOYMENT,
            **routing,
            # the slots, and room for token counts and checks beside full slots (the gateway's
            # fair queue admits no more sequences than slots; Serve routes to the less busy)
            max_ongoing_requests=self._config.parallel + CONTROL_CALLS,
            ray_actor_options={"num_cpus": self._num_cpus},
            health_check_period_s=self._health_period_s,
            health_check_timeout_s=max(30.0, self._health_period_s),
            graceful_shutdown_timeout_s=5,
            **scaling_options(scaling, self._config.parallel),
        )
        # Serve 2.60 refuses `version=` in options and versions a Python-built deployment with a
        # random string at each run, which made every rescale replace every replica (measured);
        # the same version for the same replica config makes it only add or remove replicas.
        deployment._version = hashlib.sha256(repr(replica).encode()).hexdigest()[:16]
        return serve.run(deployment.bind(replica), name=self._application, route_prefix=None)

    async def start(self) -> EngineInfo:
        async with self._lock:
            if self._info is not None:
                return self._info
            await asyncio.to_thread(connect, self._address, namespace=self._namespace, timeout_s=10.0)
            await asyncio.to_thread(self._note_left_running)
            # claimed before it is deployed: a gateway stopping meanwhile (a rolling restart)
            # must not delete the application this one is about to reuse
            await asyncio.to_thread(claim, self._namespace, self._application)
            try:
                handle = await asyncio.wait_for(
                    asyncio.to_thread(self._deploy, self._scaling), self._config.load_timeout_s
                )
            except TimeoutError:
                raise RayUnavailableError(
                    f"the Ray replicas of {self._application} did not start within "
                    f"{self._config.load_timeout_s:.0f} s",
                    retry_after=10,
                ) from None
            except AlizeError:
                raise
            except Exception as exc:  # Serve's deployment errors have no common base
                raise RayUnavailableError(
                    f"Ray Serve could not deploy {self._application}: {type(exc).__name__}: {exc}",
                    retry_after=10,
                ) from None
            self._handle = handle
            _, info, _ = await self._call(handle.describe)
            self._info = replace(info, max_sequences=self._config.parallel * self._scaling.most)
            log.info("%s runs on Ray Serve (%s)", self._application, scaling_options(self._scaling, 0))
            return self._info

    def _note_left_running(self) -> None:
        """Say so when this deployment's application is already running (left by a gateway
        killed outright, or deployed by another gateway on the cluster): it is redeployed in
        place, not beside."""
        try:
            found = [app for app in list_apps(self._namespace) if app.name == self._application]
        except Exception as exc:  # only a note: the deployment itself says what fails
            log.debug("could not list the Serve applications: %s", exc)
            return
        for app in found:
            log.info(
                "the Serve application %s is already running (%s, %d replicas): redeploying it in "
                "place (its replicas are kept when their config is unchanged, else replaced)",
                app.name,
                app.status,
                app.running,
            )

    async def stop(self) -> None:
        async with self._lock:
            handle, self._handle, self._info = self._handle, None, None
            if handle is None:
                return
            serve: Any = _import("ray.serve")
            try:
                others = await asyncio.to_thread(release, self._namespace, self._application)
                if others:
                    log.info(
                        "the Serve application %s stays: %d other gateway(s) still use it",
                        self._application,
                        len(others),
                    )
                    return
                await asyncio.to_thread(serve.delete, self._application)
            except Exception as exc:  # the cluster may be gone; nothing is left to free here
                log.warning("could not delete the Serve application %s: %s", self._application, exc)

    async def rescale(self, scaling: ReplicaScaling) -> None:
        async with self._lock:
            self._scaling = scaling
            if self._info is None:
                return  # applied when the deployment loads
            self._handle = await asyncio.to_thread(self._deploy, scaling)
            self._info = replace(self._info, max_sequences=self._config.parallel * scaling.most)
            log.info("%s rescaled on Ray Serve (%s)", self._application, scaling_options(scaling, 0))

    def _ready(self) -> Any:
        if self._handle is None:
            raise EngineUnavailableError("the model is not loaded", retry_after=2)
        return self._handle

    # ------------------------------------------------------------------ calls

    def _translate(self, exc: BaseException, *, started: bool) -> AlizeError | None:
        """Ray's error as Alizé's; ``None`` when it is not Ray's."""
        serve_errors: Any = _import("ray.serve.exceptions")
        if isinstance(exc, serve_errors.DeploymentUnavailableError):
            # the application was deleted under this gateway (`alize ray delete`, another
            # cluster user) or failed to deploy: nothing serves it until it is loaded again
            return EngineUnavailableError(
                f"the Serve application {self._application} is unavailable (deleted or failed "
                "to deploy); a gateway deploys it again when it starts",
                retry_after=30,
            )
        if isinstance(exc, serve_errors.ReplicaUnavailableError):
            return EngineUnavailableError(
                f"a Ray replica of {self._application} went away; Serve is replacing it", retry_after=2
            )
        if isinstance(exc, serve_errors.BackPressureError):
            return QueueFullError(
                f"every Ray replica of {self._application} has a full queue",
                retry_after=float(exc.retry_after_s or 1),
            )
        exceptions: Any = _import("ray.exceptions")
        if isinstance(exc, exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AlizeError):
                return cause
            return EngineError(f"a Ray replica of {self._application} failed: {type(cause).__name__}")
        if isinstance(exc, exceptions.RayActorError | exceptions.ActorUnavailableError):
            where = "while streaming this reply" if started else "before it took the request"
            return EngineUnavailableError(
                f"the Ray replica serving {self._application} died {where}; Serve is replacing it",
                retry_after=2,
            )
        if isinstance(exc, exceptions.RayError):
            return RayUnavailableError(f"Ray failed: {type(exc).__name__}: {exc}", retry_after=5)
        return None

    async def _call(self, method: Any, *args: Any) -> Any:
        for attempt in range(RETRIES_BEFORE_FIRST_BYTE + 1):
            try:
                return await method.remote(*args)
            except Exception as exc:
                error = self._translate(exc, started=False)
                if error is None:
                    raise
                if isinstance(error, EngineUnavailableError) and attempt < RETRIES_BEFORE_FIRST_BYTE:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise error from None
        raise AssertionError("unreachable")

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        handle = self._ready()
        for attempt in range(RETRIES_BEFORE_FIRST_BYTE + 1):
            stream = handle.options(stream=True).generate.remote(request)
            started = False
            try:
                async for item in stream:
                    if not started:  # the replica's name: it took the request
                        started = True
                        self.served_by[str(item)] = self.served_by.get(str(item), 0) + 1
                        continue
                    yield item
                return
            except Exception as exc:
                error = self._translate(exc, started=started)
                if error is None:
                    raise
                retry = not started and isinstance(error, EngineUnavailableError)
                if retry and attempt < RETRIES_BEFORE_FIRST_BYTE:
                    log.warning("%s; sending the request again", error.message)
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise error from None
            finally:
                stream.cancel()  # a no-op once finished; otherwise the replica stops generating

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        count: int = await self._call(self._ready().count_prompt_tokens, request)
        return count

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        result: Embeddings = await self._call(self._ready().embed, list(texts))
        return result

    async def check(self) -> None:
        await self._call(self._ready().describe)
