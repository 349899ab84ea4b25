"""``inferscale operator``: run the controller, with leader election between replicas.

The process reads its credentials in-cluster (the pod's ServiceAccount) or from the kubeconfig,
waits until it holds the leader Lease (unless ``--no-leader-election``), then runs kopf's
operator loop until SIGTERM, or until leadership is lost, in which case it exits with status 1 so
Kubernetes restarts it as a follower: never two leaders writing at once.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import socket
import sys
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferscale.config import OperatorSettings

DEFAULT_LEASE_NAME = "inferscale-operator"


def register(subparsers: Any) -> None:
    """Add the ``operator`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "operator",
        help="run the inferscale operator (reconciles InferenceModels)",
        description="Run the controller. Credentials: in-cluster, else $KUBECONFIG.",
    )
    p.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: every namespace)",
    )
    p.add_argument(
        "--no-leader-election",
        dest="leader_election",
        action="store_false",
        help="run without the leader Lease (one replica only)",
    )
    p.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the leader Lease (default $POD_NAMESPACE or default)",
    )
    p.add_argument("--lease-name", default=DEFAULT_LEASE_NAME, help="name of the leader Lease")
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf's liveness endpoint (empty to disable)",
    )
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_operator)


def _identity() -> str:
    # The pod name is unique among live replicas; the suffix separates restarts of one pod.
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}-{uuid.uuid4().hex[:6]}"


async def run_operator(args: argparse.Namespace, settings: OperatorSettings) -> int:
    """Elect, then run kopf until stopped; 1 when leadership was lost."""
    from concurrent.futures import ThreadPoolExecutor

    import kopf

    import inferscale.controller  # noqa: F401  (registers the handlers)
    from inferscale.controller.inference_model import Runtime
    from inferscale.kube.client import API_THREADS, KubernetesApi
    from inferscale.kube.lease import LeaderElector

    log = logging.getLogger("inferscale.operator")
    # httpx logs every request at INFO: a line per router per autoscaler round and per push.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # asyncio.to_thread's default pool has min(32, cores + 4) threads: 6 on a 2-core node, too
    # few for API calls while a thousand models reconcile.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(API_THREADS))
    api = KubernetesApi.from_environment(args.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    identity = _identity()
    elector = LeaderElector(api, args.lease_namespace, args.lease_name, identity)
    if args.leader_election:
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # A follower is healthy too: answer the liveness probe while waiting, or a rollout of
        # the operator's Deployment would never see its standby replicas become ready.
        standby = await _serve_standby_health(args.liveness) if args.liveness else None
        try:
            if not await elector.acquire(stop):
                return 0
        finally:
            if standby is not None:
                await standby.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    holder = asyncio.create_task(elector.hold(stop)) if args.leader_election else None
    try:
        await kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            memo=kopf.Memo(runtime=Runtime(api=api, settings=settings)),
            stop_flag=stop,
            liveness_endpoint=args.liveness or None,
            # Without it kopf names itself after getpass.getuser(), which raises KeyError in
            # a container whose numeric user has no passwd entry (the chart's runAsUser 1000
            # under containerd; podman adds an entry, so only a real kubelet showed it).
            identity=identity,  # type: ignore[arg-type]  # kopf's NewType of str, not exported
        )
    finally:
        stop.set()
        kept = await holder if holder is not None else True
        if args.leader_election and kept:
            await elector.release()  # a standby takes over now, not when the lease expires
        api.close()
    if not kept:
        log.error("exiting: leadership was lost")
        return 1
    return 0


async def _serve_standby_health(liveness: str) -> Any:
    """Serve ``200`` on the liveness URL's path until leadership starts kopf's own endpoint."""
    from urllib.parse import urlsplit

    from aiohttp import web

    from inferscale.serving import serve_app

    async def healthy(_request: web.Request) -> web.Response:
        return web.json_response({"role": "standby"})

    url = urlsplit(liveness)
    app = web.Application()
    app.router.add_get(url.path or "/", healthy)
    runner, _port = await serve_app(app, url.hostname or "0.0.0.0", url.port or 8080)
    return runner


MALLOC_ARENAS = 2
"""glibc malloc arenas the operator may use (``M_ARENA_MAX``)."""


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Limit glibc's malloc arenas before any thread starts; False where that is not glibc.

    Every thread that allocates gets its own arena by default (up to 8 per core), and memory
    freed in one stays held there. The operator's API calls run on 16 threads, each parsing
    responses: a thousand models took the process to 648 MiB peak RSS with the default, and to
    463 MiB in the next run with two arenas and nothing else changed (``bench/operator_scale``).
    ``MALLOC_ARENA_MAX`` in the environment, read by glibc at start-up, has the same effect and
    wins when set.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_arena_max = -8  # from glibc's malloc.h
        return bool(libc.mallopt(m_arena_max, arenas))
    except (OSError, AttributeError):
        return False  # musl, macOS: their allocators do not keep per-thread arenas this way


def quiet_watch_successes(record: logging.LogRecord) -> bool:
    """Logging filter: drop kopf's "Handler '...' succeeded." for watch-event handlers.

    kopf logs one such line at INFO for every handler of every watch event: with a thousand
    models, 21,000 of the operator's 22,000 log lines, and about 4 % of its CPU in formatting
    and writing them (``bench/operator_scale``). kopf marks the records of watch-event
    handlers, and only those, with ``k8s_skip``; their failures, the handlers' own messages and
    every line of the create/update/resume handlers stay. ``--verbose`` keeps them all.
    """
    return not (
        record.levelno == logging.INFO
        and getattr(record, "k8s_skip", False)
        and isinstance(record.msg, str)
        and record.msg.startswith("Handler ")
        and record.msg.endswith(" succeeded.")
    )


def load_settings() -> OperatorSettings | None:
    """The operator's settings from the environment; None, with the problem printed, if bad.

    A setting that does not parse or is out of range (a negative price, a malformed key) stops
    the operator before it touches the cluster, with one message naming the setting, instead of
    a traceback from inside kopf or, worse, a model scaled on a wrong figure.
    """
    from inferscale.config import OperatorSettings

    try:
        return OperatorSettings()
    except ValueError as error:  # pydantic's ValidationError and pydantic-settings' SettingsError
        print(
            "inferscale operator: invalid settings (INFERSCALE_* environment variables, the "
            f"chart's operator.settings): {error}",
            file=sys.stderr,
        )
        return None


def cmd_operator(args: argparse.Namespace) -> int:
    """Entry point of ``inferscale operator``; 2 when its settings are invalid."""
    import kopf

    settings = load_settings()
    if settings is None:
        return 2
    cap_malloc_arenas()

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(quiet_watch_successes)
    return asyncio.run(run_operator(args, settings))
