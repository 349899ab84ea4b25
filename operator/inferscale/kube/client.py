"""Kubernetes API access for the operator: server-side apply, get, list, delete, status patches.

Objects are plain dicts (what the pure builders return). Every blocking call of the
``kubernetes`` client runs in a worker thread (``asyncio.to_thread``) so kopf's event loop never
stalls on the network.

Failure behaviour: an HTTP error from the API server is raised as ``NotFound`` (404),
``Conflict`` (409), ``Forbidden`` (403) or ``KubeApiError`` (all in :mod:`inferscale.errors`),
raised ``from`` the client's exception and carrying the server's own status message; a transport
failure (connection refused, timeout) is a ``KubeApiError`` with status 0. ``delete`` treats
NotFound as success (the goal state is reached). Nothing here retries: kopf's handler retry with
back-off does that, one level up.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import orjson
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from inferscale.errors import Conflict, Forbidden, KubeApiError, NotFound

API_THREADS = 16
"""Worker threads (and pooled connections) for the blocking client's calls."""

FIELD_MANAGER = "inferscale"
"""Field manager of every server-side apply the operator makes."""

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        """The URL path of a collection, an object or an object's subresource."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced:
            if namespace is None:
                # A namespaced kind listed across every namespace.
                if name is not None:
                    raise ValueError(f"{self.plural}: a namespaced object needs a namespace")
            else:
                base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if sub is not None:
            base += f"/{sub}"
        return base


RESOURCES: dict[tuple[str, str], ResourceType] = {
    ("v1", "Pod"): ResourceType("", "v1", "pods"),
    ("v1", "Service"): ResourceType("", "v1", "services"),
    ("v1", "Secret"): ResourceType("", "v1", "secrets"),
    ("v1", "ConfigMap"): ResourceType("", "v1", "configmaps"),
    ("v1", "ServiceAccount"): ResourceType("", "v1", "serviceaccounts"),
    ("v1", "PersistentVolumeClaim"): ResourceType("", "v1", "persistentvolumeclaims"),
    ("v1", "Event"): ResourceType("", "v1", "events"),
    ("v1", "Node"): ResourceType("", "v1", "nodes", namespaced=False),
    ("v1", "Namespace"): ResourceType("", "v1", "namespaces", namespaced=False),
    ("apps/v1", "Deployment"): ResourceType("apps", "v1", "deployments"),
    ("apps/v1", "ReplicaSet"): ResourceType("apps", "v1", "replicasets"),
    ("policy/v1", "PodDisruptionBudget"): ResourceType("policy", "v1", "poddisruptionbudgets"),
    ("batch/v1", "Job"): ResourceType("batch", "v1", "jobs"),
    ("coordination.k8s.io/v1", "Lease"): ResourceType("coordination.k8s.io", "v1", "leases"),
    ("inferscale.io/v1alpha1", "InferenceModel"): ResourceType(
        "inferscale.io", "v1alpha1", "inferencemodels"
    ),
    ("inferscale.io/v1alpha1", "InferenceRoute"): ResourceType(
        "inferscale.io", "v1alpha1", "inferenceroutes"
    ),
    ("inferscale.io/v1alpha1", "InferenceProvider"): ResourceType(
        "inferscale.io", "v1alpha1", "inferenceproviders"
    ),
    ("inferscale.io/v1alpha1", "InferenceClient"): ResourceType(
        "inferscale.io", "v1alpha1", "inferenceclients"
    ),
}


def resource_type(api_version: str, kind: str) -> ResourceType:
    """The REST location of a kind the operator manages; unknown kinds are a programming error."""
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"inferscale does not manage {kind} ({api_version})") from None


class KubeApi(Protocol):
    """What the operator needs from the Kubernetes API (real: :class:`KubernetesApi`)."""

    async def apply(
        self, obj: JsonDict, *, force: bool = True, field_manager: str = FIELD_MANAGER
    ) -> JsonDict:
        """Server-side apply ``obj`` (as ``inferscale`` by default); return the stored object.

        A ``metadata.resourceVersion`` in ``obj`` makes the write conditional (409 if stale).
        """
        ...

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JsonDict:
        """Read one object; raise NotFound when it does not exist."""
        ...

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[JsonDict]:
        """List objects of a kind, optionally filtered by a label selector."""
        ...

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete one object (foreground propagation); False when it was already gone."""
        ...

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: JsonDict
    ) -> JsonDict:
        """Merge-patch the ``status`` subresource."""
        ...


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how this client authenticates (paths, not key material)."""

    server: str
    ca_path: str | None
    insecure: bool
    scheme: str | None
    token: str | None
    certificate_path: str | None
    private_key_path: str | None


def _error_for(status: int, body: bytes | str | None) -> KubeApiError:
    """Turn an API server error response (a ``Status`` object) into our exception."""
    reason, message = "Unknown", ""
    try:
        payload = json.loads(body or b"{}")
        reason = str(payload.get("reason") or reason)
        message = str(payload.get("message") or "")
    except (ValueError, AttributeError):
        message = (body.decode(errors="replace") if isinstance(body, bytes) else str(body))[:500]
    error_type: type[KubeApiError] = {404: NotFound, 409: Conflict, 403: Forbidden}.get(
        status, KubeApiError
    )
    return error_type(status, reason, message)


class KubernetesApi:
    """:class:`KubeApi` over the official ``kubernetes`` client."""

    def __init__(self, api_client: k8s.ApiClient, timeout_seconds: float = 30) -> None:
        """Use ``api_client`` (configured with credentials) for every call."""
        self._api = api_client
        self._timeout = timeout_seconds

    @classmethod
    def from_environment(
        cls, kubeconfig: str | None = None, timeout_seconds: float = 30
    ) -> KubernetesApi:
        """In-cluster credentials when running in a pod, else the kubeconfig (or $KUBECONFIG).

        Raises ``KubeApiError`` (status 0, reason ``NoCredentials``) when neither is usable:
        no kubeconfig, or one that cannot be read.
        """
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            try:
                k8s_config.load_kube_config(
                    config_file=kubeconfig, client_configuration=configuration
                )
            except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError) as error:
                where = kubeconfig or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
                raise KubeApiError(0, "NoCredentials", f"{where}: {error}") from error
        # Calls run in worker threads; give each its own connection instead of queueing on
        # urllib3's small default pool.
        configuration.connection_pool_maxsize = API_THREADS
        return cls(k8s.ApiClient(configuration), timeout_seconds)

    def close(self) -> None:
        """Release the connection pool."""
        self._api.close()

    def connection(self) -> Connection:
        """The server and credentials this client uses, for kopf's login (one source for both).

        The bearer token is read through the configuration's refresh hook, so an in-cluster
        token that the kubelet rotated is picked up when kopf logs in again after a 401.
        """
        conf: k8s.Configuration = self._api.configuration
        header = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix(
            "authorization"
        )
        parts = header.split(" ", 1) if header else []
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, header or None)
        return Connection(
            server=str(conf.host),
            ca_path=conf.ssl_ca_cert or None,
            insecure=not conf.verify_ssl,
            scheme=scheme,
            token=token,
            certificate_path=conf.cert_file or None,
            private_key_path=conf.key_file or None,
        )

    def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> JsonDict:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        prepared = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*prepared, _request_timeout=self._timeout)
            data = response.read()
        except k8s.ApiException as error:
            raise _error_for(error.status or 0, error.body) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeApiError(0, "Unreachable", f"{method} {path}: {error}") from error
        if not 200 <= response.status < 300:
            raise _error_for(response.status, data)
        try:
            # orjson: several times faster than json on the large objects the server returns,
            # and this runs for every call (bench/operator_scale).
            result = orjson.loads(data or b"{}")
        except ValueError as error:
            raise KubeApiError(
                response.status, "BadResponse", f"{method} {path}: not JSON"
            ) from error
        if not isinstance(result, dict):
            raise KubeApiError(response.status, "BadResponse", f"{method} {path}: not an object")
        return result

    async def apply(
        self, obj: JsonDict, *, force: bool = True, field_manager: str = FIELD_MANAGER
    ) -> JsonDict:
        """Server-side apply; ``force`` takes over fields another manager set (kubectl edit)."""
        meta = obj.get("metadata") or {}
        kind = resource_type(obj["apiVersion"], obj["kind"])
        path = kind.path(meta.get("namespace"), meta["name"])
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        return await asyncio.to_thread(
            self._call, "PATCH", path, query, orjson.dumps(obj), "application/apply-patch+yaml"
        )

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JsonDict:
        """Read one object."""
        path = resource_type(api_version, kind).path(namespace, name)
        return await asyncio.to_thread(self._call, "GET", path)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[JsonDict]:
        """List objects; each item gets its ``apiVersion`` and ``kind`` back (lists omit them)."""
        path = resource_type(api_version, kind).path(namespace)
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await asyncio.to_thread(self._call, "GET", path, query)
        items: list[JsonDict] = result.get("items") or []
        return [{"apiVersion": api_version, "kind": kind, **item} for item in items]

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with foreground propagation; NotFound counts as done."""
        path = resource_type(api_version, kind).path(namespace, name)
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}
        try:
            await asyncio.to_thread(self._call, "DELETE", path, None, body, "application/json")
        except NotFound:
            return False
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: JsonDict
    ) -> JsonDict:
        """Merge-patch the status subresource (only the fields given change)."""
        path = resource_type(api_version, kind).path(namespace, name, "status")
        return await asyncio.to_thread(
            self._call, "PATCH", path, None, {"status": status}, "application/merge-patch+json"
        )
