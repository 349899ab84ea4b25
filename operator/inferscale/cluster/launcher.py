"""The pod launcher: a small kubelet for the launcher nodes, running each pod as local processes.

For every pod bound to one of its nodes it owns, alone (KWOK's stages leave these pods
alone), everything a kubelet would do within reach of one machine:

* maps each container image to a local command (``images.yaml``); an unmapped image is
  reported as ``ErrImagePull``;
* gives the pod an address from its node's podCIDR and, in netns mode, its own network
  namespace on the cluster bridge;
* materialises its volumes (projected service-account token, CA and namespace; ConfigMaps;
  Secrets; downward API; emptyDir; hostPath; a claim bound to a hostPath or local
  PersistentVolume) and bind-mounts them in the pod's own mount namespace, so in-cluster
  configuration works and RBAC is real;
* builds the environment (values, downward API, ConfigMap and Secret keys, ``envFrom``,
  ``$(VAR)`` expansion, ``KUBERNETES_SERVICE_HOST``/``PORT``);
* runs startup, readiness and liveness probes (HTTP and TCP), restarts containers per
  ``restartPolicy`` with doubling back-off, and writes status (phase, IPs, conditions,
  container states, restart counts) and Events;
* on deletion runs each container's preStop hook (sleep, exec or httpGet), then sends
  SIGTERM, waits out what is left of the grace period, sends SIGKILL, reports the
  containers terminated and completes the deletion; a container that fails with
  ``terminationMessagePolicy: FallbackToLogsOnError`` gets its log's tail as the message;
* keeps Prometheus's file_sd targets for pods that declare a metrics port.

Failure behaviour: API errors on status writes are logged and retried on the next change;
a pod whose setup fails shows the reason in its container state (as a kubelet's
``CreateContainerConfigError``). On SIGTERM the launcher stops every pod (bounded) and exits.
Run as ``python -m inferscale.cluster.launcher STATE_DIR``; ``cluster up`` does that.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from inferscale.cluster import network, pods, prometheus
from inferscale.cluster.config import ClusterConfig
from inferscale.cluster.images import ImageMap, UnmappedImage, resolve_argv
from inferscale.cluster.kubeapi import async_client, server_address
from inferscale.cluster.process import ClusterError, ProcessRecord, start_time

LOG = logging.getLogger("inferscale.cluster.launcher")
COMPONENT = "inferscale-launcher"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: How long the launcher gives its pods on its own shutdown, whatever their grace periods.
SHUTDOWN_GRACE = 10.0
WATCH_TIMEOUT = 240
CONFIG_RETRY = 2.0
#: PersistentVolume source fields, to name the type of one the launcher cannot mount.
_VOLUME_SOURCES = frozenset(
    {"csi", "nfs", "iscsi", "fc", "rbd", "cephfs", "awsElasticBlockStore", "gcePersistentDisk"}
    | {"azureDisk", "azureFile", "glusterfs", "flexVolume", "vsphereVolume", "portworxVolume"}
)
FALLBACK_TO_LOGS = "FallbackToLogsOnError"
# A kubelet's limits for a termination message taken from the log: 80 lines, 2 KiB.
TERMINATION_MESSAGE_LINES = 80
TERMINATION_MESSAGE_BYTES = 2048
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now() -> str:
    """The current time as the API's RFC 3339 timestamp."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SetupError(Exception):
    """A pod cannot start yet or at all; ``reason`` goes into the container's waiting state."""

    def __init__(self, reason: str, message: str, retry: bool = False) -> None:
        """Say why, as a kubelet would (reason and message), and whether to try again."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry = retry


class Api:
    """The few API calls the launcher makes, over one shared httpx client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        """Wrap an authenticated client."""
        self.client = client

    async def get(self, path: str) -> dict[str, Any] | None:
        """GET an object; None when it does not exist."""
        response = await self.client.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        """Strategic-merge-patch a pod's status; False if the pod is gone."""
        meta = pod["metadata"]
        response = await self.client.patch(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            content=json.dumps({"metadata": {"uid": meta["uid"]}, "status": status}),
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        if response.status_code in (404, 409):
            return False
        response.raise_for_status()
        return True

    async def finish_deletion(self, pod: dict[str, Any]) -> None:
        """Delete with grace 0 (the kubelet's last step), only this very pod (uid)."""
        meta = pod["metadata"]
        response = await self.client.request(
            "DELETE",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            content=json.dumps({"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code not in (200, 202, 404, 409):
            response.raise_for_status()

    async def event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Record an Event on the pod; failures only log (events are best effort)."""
        meta = pod["metadata"]
        stamp = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT, "host": pod["spec"].get("nodeName", "")},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.client.post(f"/api/v1/namespaces/{meta['namespace']}/events", json=body)
        except httpx.HTTPError as error:
            LOG.warning("event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], error)

    async def token(
        self, pod: dict[str, Any], audience: str | None, expiration: int
    ) -> tuple[str, float]:
        """A bound service-account token for the pod, and its lifetime in seconds."""
        meta, spec = pod["metadata"], pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        response = await self.client.post(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token", json=body
        )
        if response.status_code != 201:
            raise SetupError(
                "CreateContainerConfigError",
                f"token for ServiceAccount {account}: {response.status_code} {response.text[:200]}",
                retry=True,
            )
        return response.json()["status"]["token"], float(expiration)


class ContainerRunner:
    """One container of a pod: its process, restarts, probes and reported state."""

    def __init__(self, pod: PodRunner, spec: dict[str, Any]) -> None:
        """Prepare, start nothing yet."""
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.ever_started = False
        self.process: asyncio.subprocess.Process | None = None
        self.record: ProcessRecord | None = None
        self.stopping = False
        self.kill_reason = ""
        self.task: asyncio.Task[None] | None = None
        self.log_start: tuple[Path, int] | None = None
        """The log file and where the current run's output begins in it."""

    def status(self) -> dict[str, Any]:
        """This container's entry in ``status.containerStatuses``."""
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.ever_started:
            uid = self.pod.uid.replace("-", "")[:12]
            out["containerID"] = f"inferscale://{uid}-{self.name}-{self.restart_count}"
        return out

    def _log_tail(self) -> str:
        """The last lines of the current run's log, within a kubelet's termination-message size."""
        if self.log_start is None:
            return ""
        path, offset = self.log_start
        try:
            with path.open("rb") as log:
                log.seek(max(offset, path.stat().st_size - TERMINATION_MESSAGE_BYTES))
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        lines = text.splitlines()[-TERMINATION_MESSAGE_LINES:]
        return "\n".join(lines).strip()

    def _termination_file(self) -> str:
        """What the run wrote to its ``terminationMessagePath``, as a kubelet reads it.

        Only a path inside one of the container's volumes can be read here (a kubelet mounts a
        file of its own there; the launcher has no image filesystem to put one in), which is
        where inferscale's preload Job puts it. Empty when unreadable.
        """
        path = self.spec.get("terminationMessagePath")
        if not isinstance(path, str) or not path:
            return ""
        for source, target, _read_only in self.pod.mounts.get(self.name, []):
            inside = Path(path)
            if inside.is_relative_to(target) and inside != Path(target):
                try:
                    with (Path(source) / inside.relative_to(target)).open("rb") as file:
                        text = file.read(TERMINATION_MESSAGE_BYTES).decode(errors="replace")
                except OSError:
                    return ""
                return text.strip()
        return ""

    def set_waiting(self, reason: str, message: str = "") -> None:
        """Report the container as waiting, and say so in the pod status."""
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = self.started = False
        self.pod.changed()

    async def run(self, argv: list[str], env: dict[str, str]) -> None:
        """Start, watch, restart: until the pod stops or the restart policy says done."""
        policy = self.pod.pod["spec"].get("restartPolicy") or "Always"
        config = self.pod.launcher.config
        while not self.stopping:
            exit_code, began, ended = await self._run_once(argv, env)
            terminated = {
                "exitCode": exit_code,
                "reason": pods.exit_reason(exit_code),
                "startedAt": began,
                "finishedAt": ended,
            }
            written = self._termination_file()
            if self.kill_reason:
                terminated["message"] = self.kill_reason
            elif written:
                terminated["message"] = written
            elif exit_code != 0 and self.spec.get("terminationMessagePolicy") == FALLBACK_TO_LOGS:
                # As a kubelet: the tail of this run's log says why it failed.
                tail = self._log_tail()
                if tail:
                    terminated["message"] = tail
            self.kill_reason = ""
            self.ready = self.started = False
            if self.stopping:
                self.state = {"terminated": terminated}
                break
            if not pods.restart_wanted(policy, exit_code):
                self.state = {"terminated": terminated}
                self.pod.changed()
                break
            self.last_state = {"terminated": terminated}
            delay = pods.backoff(self.restart_count, config.initial_backoff, config.max_backoff)
            message = (
                f"back-off {delay:g}s restarting failed container={self.name} pod={self.pod.key}"
            )
            self.set_waiting("CrashLoopBackOff", message)
            await self.pod.launcher.api.event(self.pod.pod, "Warning", "BackOff", message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pod.stop_requested.wait(), delay)
            self.restart_count += 1
        self.pod.changed()

    async def _run_once(self, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        log = self.pod.log_dir / f"{self.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"==== {now()} start #{self.restart_count}: {shlex.join(argv)}\n")
            out.flush()
            self.log_start = (log, out.tell())
            process = await asyncio.create_subprocess_exec(
                *self.pod.wrap(argv, self.spec),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.pod.workdir(self.spec),
                start_new_session=True,  # its own process group: signals reach its children
            )
        self.process = process
        began = now()
        started = start_time(process.pid)
        if started is not None:
            self.record = ProcessRecord(f"{self.pod.key}/{self.name}", process.pid, started)
            self.pod.save_record(self.name, self.record)
        self.ever_started = True
        self.state = {"running": {"startedAt": began}}
        self.started = "startupProbe" not in self.spec
        self.ready = self.started and "readinessProbe" not in self.spec
        self.pod.changed()
        await self.pod.launcher.api.event(
            self.pod.pod, "Normal", "Started", f"Started container {self.name}"
        )
        probes = asyncio.create_task(self._probe_all(process))
        try:
            code = await process.wait()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes
        self.process = None
        # A process ended by a signal reports 128+N, as container runtimes do.
        return (128 - code if code < 0 else code), began, now()

    def signal(self, sig: signal.Signals) -> None:
        """Signal the container's process group."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)

    async def kill(self, grace: float, reason: str) -> None:
        """The preStop hook, then SIGTERM, SIGKILL past ``grace`` seconds; records how it ended."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        began = time.monotonic()
        await self._pre_stop(grace)
        term_grace = pods.sigterm_grace(grace, time.monotonic() - began)
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), term_grace)
            self.kill_reason = (
                f"{reason}: stopped by SIGTERM after {time.monotonic() - began:.2f}s "
                f"(grace period {grace:g}s)"
            )
        except TimeoutError:
            self.signal(signal.SIGKILL)
            self.kill_reason = f"{reason}: killed by SIGKILL after the grace period of {grace:g}s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 10)

    async def _pre_stop(self, grace: float) -> None:
        """Run the container's preStop hook, bounded by the grace period, as a kubelet does.

        A hook that fails or overruns is reported as a ``FailedPreStopHook`` Event and the
        stop goes on: the hook delays SIGTERM, it never prevents it. The container keeps
        serving meanwhile, which is the point: load balancers take the pod out first.
        """
        hook = pods.pre_stop_hook(self.spec)
        if hook is None:
            return
        problem = hook.problem
        try:
            if hook.kind == "sleep":
                await asyncio.sleep(min(hook.seconds, grace))
            elif hook.kind == "exec":
                problem = await asyncio.wait_for(self._pre_stop_exec(hook.command), grace)
            elif hook.kind == "http" and hook.target is not None:
                problem = await asyncio.wait_for(self._pre_stop_http(hook.target), grace)
        except TimeoutError:
            problem = f"did not finish within the grace period of {grace:g}s"
        if problem:
            await self.pod.launcher.api.event(
                self.pod.pod,
                "Warning",
                "FailedPreStopHook",
                f"PreStopHook failed for container {self.name}: {problem}",
            )

    async def _pre_stop_exec(self, command: tuple[str, ...]) -> str:
        """Run ``command`` in the pod's namespaces; '' on exit 0, else why it failed."""
        try:
            process = await asyncio.create_subprocess_exec(
                *self.pod.wrap(list(command), self.spec),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=self.pod.workdir(self.spec),
            )
        except OSError as error:
            return f"cannot run {command[0]!r}: {error}"
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        return "" if code == 0 else f"command {command[0]!r} exited with {code}"

    async def _pre_stop_http(self, target: pods.ProbeTarget) -> str:
        """GET the hook's URL on the pod; '' on a 2xx or 3xx answer, else why it failed."""
        url = f"{target.scheme}://{target.host or self.pod.ip}:{target.port}{target.path}"
        try:
            response = await self.pod.launcher.probe_client.get(url, headers=dict(target.headers))
        except httpx.HTTPError as error:
            return f"GET {url}: {error}"
        if 200 <= response.status_code < 400:
            return ""
        return f"GET {url}: HTTP {response.status_code}"

    async def _probe_all(self, process: asyncio.subprocess.Process) -> None:
        spec = self.spec
        grace = float(self.pod.pod["spec"].get("terminationGracePeriodSeconds") or 30)
        if "startupProbe" in spec:
            if not await self._probe_until(spec["startupProbe"], want=True):
                await self.pod.launcher.api.event(
                    self.pod.pod, "Warning", "Unhealthy", f"Startup probe failed: {self.name}"
                )
                await self.kill(grace, "startup probe failed")
                return
            self.started = True
            self.ready = "readinessProbe" not in spec
            self.pod.changed()
        loops = []
        if "readinessProbe" in spec:
            loops.append(self._readiness(spec["readinessProbe"]))
        if "livenessProbe" in spec:
            loops.append(self._liveness(spec["livenessProbe"], grace))
        if loops:
            await asyncio.gather(*loops)

    async def _readiness(self, probe: dict[str, Any]) -> None:
        timing = pods.ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        successes = failures = 0
        while True:
            ok = await self._check(probe, timing)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if not self.ready and successes >= timing.success_threshold:
                self.ready = True
                self.pod.changed()
            elif self.ready and failures >= timing.failure_threshold:
                self.ready = False
                self.pod.changed()
            await asyncio.sleep(timing.period)

    async def _liveness(self, probe: dict[str, Any], grace: float) -> None:
        timing = pods.ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while True:
            failures = 0 if await self._check(probe, timing) else failures + 1
            if failures >= timing.failure_threshold:
                await self.pod.launcher.api.event(
                    self.pod.pod, "Warning", "Unhealthy", f"Liveness probe failed: {self.name}"
                )
                await self.kill(grace, "liveness probe failed")
                return
            await asyncio.sleep(timing.period)

    async def _probe_until(self, probe: dict[str, Any], want: bool) -> bool:
        timing = pods.ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while True:
            if await self._check(probe, timing) == want:
                return True
            failures += 1
            if failures >= timing.failure_threshold:
                return False
            await asyncio.sleep(timing.period)

    async def _check(self, probe: dict[str, Any], timing: pods.ProbeTiming) -> bool:
        try:
            target = pods.probe_target(self.spec, probe)
        except ValueError as error:
            LOG.warning("%s/%s: %s", self.pod.key, self.name, error)
            return False
        host = target.host or self.pod.ip
        if target.kind == "http":
            url = f"{target.scheme}://{host}:{target.port}{target.path}"
            try:
                response = await self.pod.launcher.probe_client.get(
                    url, headers=dict(target.headers), timeout=timing.timeout
                )
            except httpx.HTTPError:
                return False
            return 200 <= response.status_code < 400
        if target.kind == "tcp":
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, target.port), timing.timeout
                )
            except (OSError, TimeoutError):
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        # exec and grpc probes need a container runtime; they count as passing.
        return True


class PodRunner:
    """One pod on a launcher node, from first sight to completed deletion."""

    def __init__(self, launcher: Launcher, pod: dict[str, Any]) -> None:
        """Remember the pod; ``start`` does the work."""
        self.launcher = launcher
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.ip = ""
        self.netns = ""
        self.containers = [ContainerRunner(self, c) for c in pod["spec"].get("containers", [])]
        self.stop_requested = asyncio.Event()
        self.dirty = asyncio.Event()
        self.gone = False
        self.lost = False
        """Its node was lost (:meth:`Launcher.lose_node`): killed, and nothing more said of it."""
        self.start_time = now()
        self.conditions: dict[str, dict[str, Any]] = {}
        self.dir = launcher.config.pods_dir / self.uid.replace("-", "")
        self.log_dir = launcher.config.log_dir / "pods" / f"{meta['namespace']}_{meta['name']}"
        self.mounts: dict[str, list[tuple[str, str, bool]]] = {}
        self.task: asyncio.Task[None] | None = None

    # ----- helpers used by containers ---------------------------------------------------------
    def changed(self) -> None:
        """Ask the status writer to write."""
        self.dirty.set()

    def save_record(self, container: str, record: ProcessRecord) -> None:
        """Persist a container's process record, so ``cluster down`` finds it after a crash."""
        path = self.dir / "pids" / f"{container}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record.__dict__))

    def workdir(self, spec: dict[str, Any]) -> str:
        """The container's working directory if it exists here, else the pod's own folder."""
        wanted = spec.get("workingDir")
        return wanted if wanted and os.path.isdir(wanted) else str(self.dir)

    def wrap(self, argv: list[str], spec: dict[str, Any]) -> list[str]:
        """Prefix ``argv`` with entering the pod's namespaces and making its mounts."""
        steps = []
        for source, target, read_only in self.mounts.get(spec["name"], []):
            steps.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
            if read_only:
                steps.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        if self.netns:
            # The pod's hostname is its name, in its own UTS namespace, as in a real pod.
            steps.insert(0, f"hostname {shlex.quote(self.pod['metadata']['name'][:63])}")
        script = "set -e; " + "; ".join([*steps, 'exec "$@"'])
        shell = ["sh", "-c", script, "sh", *argv]
        if self.netns:
            # `ip netns exec` enters the namespace and a private mount namespace, then execs
            # (as do unshare and sh): the pid we hold stays the container's process.
            return ["ip", "netns", "exec", self.netns, "unshare", "--uts", *shell]
        if steps and os.geteuid() == 0:
            return ["unshare", "--mount", "--propagation", "slave", *shell]
        return argv

    # ----- lifecycle -----------------------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        """A newer version of the pod arrived; a deletion timestamp starts the graceful stop."""
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.stop_requested.is_set():
            self.stop_requested.set()

    async def run(self) -> None:
        """Set up, run the containers, and on deletion stop them and complete the deletion."""
        writer = asyncio.create_task(self._write_status())
        try:
            await self._run()
        finally:
            self.changed()
            await asyncio.sleep(0)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._flush_status()
            await self._teardown()

    async def _run(self) -> None:
        if not self.stop_requested.is_set():
            ready = await self._set_up()
            if ready:
                await self._run_containers()
        if self.stop_requested.is_set():
            await self._flush_status()
            if not self.gone:
                await self.launcher.api.finish_deletion(self.pod)
                self.gone = True

    async def _set_up(self) -> bool:
        """Resolve images, allocate the address, make volumes; False if the pod cannot run."""
        launcher = self.launcher
        argvs: dict[str, list[str]] = {}
        unmapped = False
        for container in self.containers:
            try:
                argvs[container.name] = launcher.images.entrypoint(container.spec.get("image", ""))
            except UnmappedImage:
                unmapped = True
                message = (
                    f'image "{container.spec.get("image")}" is not in the launcher\'s image map '
                    "(inferscale/cluster/images.yaml)"
                )
                container.set_waiting("ErrImagePull", message)
                await launcher.api.event(self.pod, "Warning", "Failed", message)
        if unmapped:
            self._condition("PodReadyToStartContainers", True)
            await self.stop_requested.wait()
            return False
        self.ip = launcher.allocate_ip(self.pod)
        if self.pod["spec"].get("hostNetwork"):
            self.ip = launcher.node_ip
        elif launcher.config.network == "netns":
            self.netns = network.netns_name(launcher.config, self.uid)
            try:
                await asyncio.to_thread(
                    network.create_pod_netns,
                    launcher.config,
                    self.netns,
                    self.ip,
                    self.pod["metadata"]["name"][:63],
                )
            except ClusterError as error:
                # The kubelet's FailedCreatePodSandBox: say so on the pod, try nothing else.
                for container in self.containers:
                    container.set_waiting("ContainerCreating", str(error))
                await launcher.api.event(self.pod, "Warning", "FailedCreatePodSandBox", str(error))
                await self.stop_requested.wait()
                return False
        self._condition("PodReadyToStartContainers", True)
        self._condition("Initialized", True)
        self.changed()
        while True:
            try:
                self.envs = {c.name: await self._environment(c.spec) for c in self.containers}
                await self._volumes()
                break
            except SetupError as error:
                for container in self.containers:
                    container.set_waiting(error.reason, error.message)
                await launcher.api.event(self.pod, "Warning", "FailedMount", error.message)
                if not error.retry:
                    await self.stop_requested.wait()
                    return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), CONFIG_RETRY)
            if self.stop_requested.is_set():
                return False
        self.argvs = {
            c.name: resolve_argv(
                launcher.images.local_argv(
                    c.spec.get("image", ""),
                    pods.container_argv(argvs[c.name], c.spec, self.envs[c.name]),
                )
            )
            for c in self.containers
        }
        return True

    async def _run_containers(self) -> None:
        for container in self.containers:
            container.task = asyncio.create_task(
                container.run(self.argvs[container.name], self.envs[container.name])
            )
        prometheus.write_targets(self.launcher.config, self.pod, self.ip)
        tasks = [c.task for c in self.containers if c.task]

        async def stopped() -> None:
            await self.stop_requested.wait()

        async def exited() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)

        stop = asyncio.create_task(stopped())
        done = asyncio.create_task(exited())
        refresh = asyncio.create_task(self._refresh_tokens())
        try:
            await asyncio.wait([stop, done], return_when=asyncio.FIRST_COMPLETED)
            if self.stop_requested.is_set() and not self.lost:
                grace = self._grace()
                for container in self.containers:
                    container.stopping = True
                await self.launcher.api.event(
                    self.pod, "Normal", "Killing", f"Stopping containers (grace period {grace:g}s)"
                )
                await asyncio.gather(
                    *(c.kill(grace, "pod deleted") for c in self.containers), return_exceptions=True
                )
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stop.cancel()
            done.cancel()
            refresh.cancel()
            prometheus.remove_targets(
                self.launcher.config,
                self.pod["metadata"]["namespace"],
                self.pod["metadata"]["name"],
            )
        if not self.stop_requested.is_set():
            # Finished by restartPolicy (a Job-like pod): tear down now, stay until deleted.
            await self._teardown()
            self.changed()
            await self._flush_status()
            await self.stop_requested.wait()

    def _grace(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return min(float(grace), self.launcher.max_grace)

    async def _teardown(self) -> None:
        if self.netns:
            namespace, self.netns = self.netns, ""
            await asyncio.to_thread(network.delete_pod_netns, namespace)
        self.launcher.release_ip(self.pod, self.ip)

    # ----- status --------------------------------------------------------------------------
    def _condition(self, kind: str, value: bool) -> None:
        old = self.conditions.get(kind)
        status = "True" if value else "False"
        if old is None or old["status"] != status:
            self.conditions[kind] = {"type": kind, "status": status, "lastTransitionTime": now()}

    def status(self) -> dict[str, Any]:
        """The pod status the launcher owns (PodScheduled stays the scheduler's)."""
        spec = self.pod["spec"]
        gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
        observed = {
            c["type"]: c["status"] for c in self.pod.get("status", {}).get("conditions") or []
        }
        all_ready = bool(self.containers) and all(c.ready for c in self.containers)
        self._condition("ContainersReady", all_ready)
        self._condition("Ready", all_ready and all(observed.get(g) == "True" for g in gates))
        states = [c.state for c in self.containers]
        all_started = all(c.ever_started for c in self.containers)
        phase = pods.pod_phase(spec.get("restartPolicy") or "Always", states, all_started)
        if phase in ("Succeeded", "Failed"):
            self._condition("Ready", False)
            self._condition("ContainersReady", False)
            self._condition("PodReadyToStartContainers", False)
        status: dict[str, Any] = {
            "phase": phase,
            "startTime": self.start_time,
            "hostIP": self.launcher.node_ip,
            "hostIPs": [{"ip": self.launcher.node_ip}],
            "conditions": list(self.conditions.values()),
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    async def _write_status(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one write
            await self._flush_status()

    async def _flush_status(self) -> None:
        if self.gone:
            return
        self.dirty.clear()
        try:
            if not await self.launcher.api.patch_status(self.pod, self.status()):
                self.gone = True
        except httpx.HTTPError as error:
            LOG.warning("status of %s: %s", self.key, error)

    # ----- configuration -------------------------------------------------------------------
    async def _lookup(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        namespace = self.pod["metadata"]["namespace"]
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        obj = await self.launcher.api.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        if obj is None:
            if optional:
                return None
            raise SetupError(
                "CreateContainerConfigError", f'{kind.lower()} "{name}" not found', retry=True
            )
        data: dict[str, str] = {}
        if kind == "ConfigMap":
            data.update(obj.get("data") or {})
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
        else:
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
        return data

    async def _environment(self, spec: dict[str, Any]) -> dict[str, str]:
        config = self.launcher.config
        meta = self.pod["metadata"]
        base = {
            "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
            "HOSTNAME": meta["name"],
            "HOME": str(self.dir / "home"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "KUBERNETES_SERVICE_HOST": self.launcher.api_host,
            "KUBERNETES_SERVICE_PORT": str(config.apiserver_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(config.apiserver_port),
            "KUBERNETES_PORT": f"tcp://{self.launcher.api_host}:{config.apiserver_port}",
        }
        (self.dir / "home").mkdir(parents=True, exist_ok=True)
        env = dict(base)
        pod = {**self.pod, "status": {**self.pod.get("status", {}), **self.status()}}
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    ref = source[key]
                    data = await self._lookup(kind, ref["name"], bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in (data or {}).items()})
        for item in spec.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = pods.expand(str(item["value"]), env)
                continue
            source = item.get("valueFrom") or {}
            if not source:
                env[name] = ""
            elif "fieldRef" in source:
                try:
                    env[name] = pods.field_ref(pod, source["fieldRef"]["fieldPath"])
                except ValueError as error:
                    raise SetupError("CreateContainerConfigError", str(error)) from error
            elif "resourceFieldRef" in source:
                env[name] = pods.resource_ref(
                    spec, source["resourceFieldRef"], self.launcher.allocatable
                )
            else:
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in source:
                        ref = source[key]
                        optional = bool(ref.get("optional"))
                        data = await self._lookup(kind, ref["name"], optional)
                        if data is not None and ref["key"] in data:
                            env[name] = data[ref["key"]]
                        elif not optional:
                            raise SetupError(
                                "CreateContainerConfigError",
                                f"couldn't find key {ref['key']} in {kind} "
                                f"{meta['namespace']}/{ref['name']}",
                                retry=True,
                            )
        return env

    async def _volumes(self) -> None:
        """Write every volume's files under the pod folder and plan each container's mounts."""
        root = self.dir / "volumes"
        paths: dict[str, str] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            target = root / name
            if "hostPath" in volume:
                paths[name] = volume["hostPath"]["path"]
                if volume["hostPath"].get("type") == "DirectoryOrCreate":
                    # As a kubelet: a missing directory is created (0755), a file there fails.
                    try:
                        Path(paths[name]).mkdir(mode=0o755, parents=True, exist_ok=True)
                    except OSError as error:
                        raise SetupError(
                            "CreateContainerConfigError", f"hostPath {paths[name]}: {error}"
                        ) from error
                continue
            if "persistentVolumeClaim" in volume:
                paths[name] = await self._claim_path(volume["persistentVolumeClaim"])
                continue
            target.mkdir(parents=True, exist_ok=True)
            paths[name] = str(target)
            files = await self._volume_files(volume)
            if files is None:
                continue
            for rel, content in files.items():
                _write_atomic(target / rel, content)
        self.mounts = {}
        for container in self.containers:
            planned = []
            for mount in container.spec.get("volumeMounts") or []:
                source = paths.get(mount["name"])
                if source is None:
                    raise SetupError(
                        "CreateContainerConfigError", f"volume {mount['name']} is not defined"
                    )
                if mount.get("subPath"):
                    source = str(Path(source) / mount["subPath"])
                self.launcher.ensure_mountpoint(mount["mountPath"], Path(source).is_dir())
                planned.append((source, mount["mountPath"], bool(mount.get("readOnly"))))
            self.mounts[container.name] = planned

    async def _claim_path(self, source: dict[str, Any]) -> str:
        """The host directory behind a claim: its bound PersistentVolume's hostPath or local path.

        A claim that is missing or not bound yet is retried, as a kubelet waits for it; a volume
        of another type cannot be mounted by a launcher on one machine.
        """
        namespace = self.pod["metadata"]["namespace"]
        claim = str(source.get("claimName", ""))
        pvc = await self.launcher.api.get(
            f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"
        )
        if pvc is None:
            raise SetupError(
                "ContainerCreating", f'persistentvolumeclaim "{claim}" not found', retry=True
            )
        volume_name = (pvc.get("spec") or {}).get("volumeName")
        bound = (pvc.get("status") or {}).get("phase") == "Bound"
        volume = await self.launcher.api.get(f"/api/v1/persistentvolumes/{volume_name}")
        if not volume_name or not bound or volume is None:
            raise SetupError(
                "ContainerCreating",
                f'persistentvolumeclaim "{claim}" is not bound to a volume yet',
                retry=True,
            )
        spec = volume.get("spec") or {}
        for kind in ("hostPath", "local"):
            path = (spec.get(kind) or {}).get("path")
            if path:
                return str(path)
        kinds = sorted(set(spec) & _VOLUME_SOURCES) or ["(none)"]
        raise SetupError(
            "CreateContainerConfigError",
            f"persistentvolume {volume_name} of claim {claim}: type {', '.join(kinds)} is not "
            "supported by the launcher (use hostPath or local)",
        )

    async def _volume_files(self, volume: dict[str, Any]) -> dict[str, str] | None:
        if "emptyDir" in volume:
            return None
        if "configMap" in volume or "secret" in volume:
            kind = "ConfigMap" if "configMap" in volume else "Secret"
            ref = volume.get("configMap") or volume.get("secret") or {}
            name = ref.get("name") or ref.get("secretName", "")
            data = await self._lookup(kind, name, bool(ref.get("optional")))
            return _select(data or {}, ref.get("items"))
        if "downwardAPI" in volume:
            return self._downward(volume["downwardAPI"].get("items") or [])
        if "projected" in volume:
            files: dict[str, str] = {}
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    token, _ = await self.launcher.api.token(
                        self.pod, sat.get("audience"), int(sat.get("expirationSeconds") or 3607)
                    )
                    files[sat.get("path", "token")] = token
                elif "configMap" in source or "secret" in source:
                    kind = "ConfigMap" if "configMap" in source else "Secret"
                    ref = source.get("configMap") or source.get("secret") or {}
                    data = await self._lookup(kind, ref["name"], bool(ref.get("optional")))
                    files.update(_select(data or {}, ref.get("items")))
                elif "downwardAPI" in source:
                    files.update(self._downward(source["downwardAPI"].get("items") or []))
            return files
        kinds = sorted(set(volume) - {"name"})
        raise SetupError(
            "CreateContainerConfigError",
            f"volume {volume['name']}: type {', '.join(kinds)} is not supported by the launcher",
        )

    def _downward(self, items: list[dict[str, Any]]) -> dict[str, str]:
        files = {}
        for item in items:
            if "fieldRef" in item:
                files[item["path"]] = pods.field_ref(self.pod, item["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in item:
                container = next(
                    (
                        c.spec
                        for c in self.containers
                        if c.name == item["resourceFieldRef"].get("containerName")
                    ),
                    self.containers[0].spec if self.containers else {},
                )
                files[item["path"]] = pods.resource_ref(
                    container, item["resourceFieldRef"], self.launcher.allocatable
                )
        return files

    async def _refresh_tokens(self) -> None:
        """Renew projected tokens well before they expire (the kubelet renews at 80%)."""
        while True:
            await asyncio.sleep(1800)
            with contextlib.suppress(SetupError, httpx.HTTPError):
                await self._volumes()


def _select(data: dict[str, str], items: list[dict[str, Any]] | None) -> dict[str, str]:
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


def _write_atomic(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content)
    os.replace(tmp, path)


class Launcher:
    """Watches the pods of its nodes and keeps one ``PodRunner`` per pod."""

    def __init__(self, config: ClusterConfig, client: httpx.AsyncClient) -> None:
        """Everything from the cluster's config; nothing starts until ``run``."""
        self.config = config
        self.api = Api(client)
        self.images = ImageMap.load(config.image_map or None)
        self.nodes = {name: i for i, name in enumerate(config.launcher_node_names())}
        netns = config.network == "netns"
        self.node_ip = server_address(config, netns)
        self.api_host = self.node_ip
        self.runners: dict[str, PodRunner] = {}
        self.used: dict[str, set[str]] = {}
        self.released: dict[str, dict[str, int]] = {}
        """Per node: address -> when it was given back (a count), for :meth:`allocate_ip`."""
        self.releases = 0
        self.allocatable: dict[str, str] = {}
        pool = next((p for p in config.pools if p.runner == "launcher"), None)
        if pool is not None:
            self.allocatable = {"cpu": pool.cpu, "memory": pool.memory}
        self.lost: set[str] = set()
        """Nodes whose machine is gone (:meth:`lose_node`): their pods are not ours to run."""
        self.max_grace = float(os.environ.get("INFERSCALE_LAUNCHER_MAX_GRACE", "3600"))
        self.healthy = False
        # One client for every probe; no keep-alive, so each probe opens a fresh connection
        # as the kubelet's do (a dead listener must fail the next probe, not a pooled socket).
        self.probe_client = httpx.AsyncClient(
            verify=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.mountpoints_file = config.state_dir / "created-mountpoints.json"

    # ----- addresses -----------------------------------------------------------------------
    def allocate_ip(self, pod: dict[str, Any]) -> str:
        """A free address in the node's podCIDR (``.2`` up), or a loopback one.

        Addresses go round rather than lowest-first: one never used is taken before any given
        back, and of those given back the one released longest ago. A reused address comes
        with a new MAC (a new veth), and a pod that talked to its previous owner keeps the old
        MAC in its neighbour cache for up to a minute: its packets to the new pod vanish
        (connect timeouts), which a real CNI prevents with a gratuitous ARP.
        """
        node = pod["spec"]["nodeName"]
        index = self.nodes[node]
        used = self.used.setdefault(node, set())
        released = self.released.setdefault(node, {})
        best: str | None = None
        for host in range(2, 255):
            if self.config.network == "netns":
                cidr = self.config.node_pod_cidr(index)
                address = cidr.rsplit(".", 1)[0] + f".{host}"
            else:
                address = network.loopback_address(self.config, index, host)
            if address in used:
                continue
            if address not in released:
                best = address  # never used: the best there is
                break
            if best is None or released[address] < released[best]:
                best = address
        if best is None:
            raise SetupError("PodIPsExhausted", f"no free pod address on {node}")
        used.add(best)
        return best

    def release_ip(self, pod: dict[str, Any], address: str) -> None:
        """Give an address back (it is reused last)."""
        node = pod["spec"].get("nodeName", "")
        self.used.get(node, set()).discard(address)
        self.releases += 1
        self.released.setdefault(node, {})[address] = self.releases

    def ensure_mountpoint(self, path: str, directory: bool) -> None:
        """Create a missing mount point on the host and remember it for ``cluster down``."""
        target = Path(path)
        if target.exists():
            return
        created = []
        parent = target if directory else target.parent
        for ancestor in [*reversed(parent.parents), parent]:
            if not ancestor.exists():
                created.append(str(ancestor))
        parent.mkdir(parents=True, exist_ok=True)
        if not directory:
            target.touch()
            created.append(str(target))
        try:
            known = json.loads(self.mountpoints_file.read_text())
        except (FileNotFoundError, ValueError):
            known = []
        self.mountpoints_file.write_text(json.dumps(sorted(set(known) | set(created))))

    # ----- the watch -----------------------------------------------------------------------
    def _mine(self, pod: dict[str, Any]) -> bool:
        node = pod.get("spec", {}).get("nodeName")
        return node in self.nodes and node not in self.lost

    # ----- a lost node ---------------------------------------------------------------------
    async def lose_node(self, node: str) -> list[str]:
        """The node's machine is gone; returns the pods killed (``namespace/name``).

        Its pods' processes die at once (SIGKILL: no preStop, no SIGTERM), their addresses
        vanish with their network, and from then on nothing is said of them (no status, no
        Event, no deletion completed), as when a kubelet's host dies. The pods stay in the API
        as they were until the control plane acts.
        """
        if node not in self.nodes:
            raise KeyError(node)
        self.lost.add(node)
        runners = [r for r in self.runners.values() if r.pod["spec"].get("nodeName") == node]
        for runner in runners:
            runner.lost = runner.gone = True
            for container in runner.containers:
                container.stopping = True
                container.signal(signal.SIGKILL)
            runner.stop_requested.set()
        tasks = [r.task for r in runners if r.task]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
        LOG.warning("node %s lost: %d pods killed", node, len(runners))
        return sorted(r.key for r in runners)

    def restore_node(self, node: str) -> None:
        """The node is back (a new machine under the same name): its pods are ours again."""
        if node not in self.nodes:
            raise KeyError(node)
        self.lost.discard(node)
        LOG.info("node %s restored", node)

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        if not self._mine(pod):
            return
        uid = pod["metadata"]["uid"]
        runner = self.runners.get(uid)
        if kind == "DELETED":
            if runner is not None:
                runner.gone = True
                runner.update(
                    {
                        **pod,
                        "metadata": {
                            **pod["metadata"],
                            "deletionTimestamp": now(),
                            "deletionGracePeriodSeconds": 0,
                        },
                    }
                )
            return
        if runner is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and not pod[
                "metadata"
            ].get("deletionTimestamp"):
                return
            runner = PodRunner(self, pod)
            self.runners[uid] = runner
            runner.task = asyncio.create_task(self._supervise(runner))
        runner.update(pod)

    async def _supervise(self, runner: PodRunner) -> None:
        try:
            await runner.run()
        except (httpx.HTTPError, OSError, SetupError, ClusterError, ValueError, KeyError) as error:
            LOG.error("pod %s: %s", runner.key, error, exc_info=True)
        finally:
            if runner.stop_requested.is_set():
                self.runners.pop(runner.uid, None)

    async def watch(self) -> None:
        """List, then watch, pods bound to a node; relist whenever the watch breaks."""
        params = {"fieldSelector": "spec.nodeName!="}
        while True:
            try:
                listing = await self.api.client.get("/api/v1/pods", params=params)
                listing.raise_for_status()
                body = listing.json()
                seen = set()
                for pod in body.get("items", []):
                    seen.add(pod["metadata"]["uid"])
                    self._handle("MODIFIED", pod)
                for uid, runner in list(self.runners.items()):
                    if uid not in seen:
                        self._handle("DELETED", runner.pod)
                self.healthy = True
                version = body["metadata"]["resourceVersion"]
                await self._stream(params, version)
            except (httpx.HTTPError, ValueError, KeyError) as error:
                LOG.warning("pod watch broke (%s); relisting", error)
                await asyncio.sleep(1)

    async def _stream(self, params: dict[str, str], version: str) -> None:
        query = {
            **params,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT),
        }
        timeout = httpx.Timeout(10.0, read=WATCH_TIMEOUT + 30.0)
        async with self.api.client.stream(
            "GET", "/api/v1/pods", params=query, timeout=timeout
        ) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    return  # e.g. 410 Gone: relist
                if event["type"] == "BOOKMARK":
                    continue
                self._handle(event["type"], event["object"])

    async def shutdown(self) -> None:
        """Stop every pod within ``SHUTDOWN_GRACE`` and clean up what they used."""
        runners = list(self.runners.values())
        for runner in runners:
            for container in runner.containers:
                container.stopping = True
            runner.stop_requested.set()
            runner.gone = True  # the pods stay in the API; only our processes go
        await asyncio.gather(
            *(
                c.kill(min(SHUTDOWN_GRACE, runner._grace()), "launcher stopped")
                for runner in runners
                for c in runner.containers
            ),
            return_exceptions=True,
        )
        tasks = [r.task for r in runners if r.task]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
        self.cleanup_leftovers()

    def cleanup_leftovers(self) -> None:
        """Kill pod processes and namespaces left by an earlier launcher of this cluster."""
        for pid_file in self.config.pods_dir.glob("*/pids/*.json"):
            with contextlib.suppress(ValueError, KeyError, OSError):
                data = json.loads(pid_file.read_text())
                ProcessRecord(data["name"], int(data["pid"]), int(data["started"])).stop(2.0)
            pid_file.unlink(missing_ok=True)
        for namespace in network.list_netns(self.config.netns_prefix):
            network.delete_pod_netns(namespace)
        for target in self.config.targets_dir.glob("*.json"):
            target.unlink(missing_ok=True)


async def _serve_health(launcher: Launcher) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=200 if launcher.healthy else 503, text="ok")

    async def listing(_: web.Request) -> web.Response:
        return web.json_response(
            {r.key: {"ip": r.ip, "netns": r.netns} for r in launcher.runners.values()}
        )

    async def node_action(request: web.Request) -> web.Response:
        node, action = request.match_info["node"], request.match_info["action"]
        try:
            if action == "lose":
                return web.json_response({"killed": await launcher.lose_node(node)})
            launcher.restore_node(node)
        except KeyError:
            return web.json_response({"error": f"no launcher node {node!r}"}, status=404)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/pods", listing)
    app.router.add_post("/nodes/{node}/{action:lose|restore}", node_action)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", launcher.config.launcher_port).start()
    return runner


async def main_async(state_dir: Path) -> None:
    """Run the launcher until SIGTERM or SIGINT."""
    config = ClusterConfig.load(state_dir)
    server = f"https://{server_address(config, config.network == 'netns')}:{config.apiserver_port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with async_client(config, server) as client:
        launcher = Launcher(config, client)
        launcher.cleanup_leftovers()
        health = await _serve_health(launcher)
        watch = asyncio.create_task(launcher.watch())
        await stop.wait()
        LOG.info("stopping %d pods", len(launcher.runners))
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await launcher.shutdown()
        await launcher.probe_client.aclose()
        await health.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m inferscale.cluster.launcher STATE_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m inferscale.cluster.launcher STATE_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per probe and status write would bury what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(main_async(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
