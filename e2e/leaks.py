"""No secret in any log or Event: every Secret value the e2e session ever saw, grepped at the end.

A watch records the values of every Secret created or changed in the cluster during the session
(client keys, provider keys, the routers' admin tokens, Redis passwords and URLs, ...) and every
Event's message, including those of namespaces that tests delete. When the session ends, every
file under the cluster's log directory (the API server, the operator, the routers, the engines,
the launcher) and every Event message is searched for each value; a value found is a failure
that names the Secret and the file, never the value itself.

Values too short to be credentials (under ``MIN_SECRET_LENGTH`` characters), certificates and
the stored documents that hold only digests (the routers' ``credentials.json``) are left out, as
are Helm's release records (the chart's own values, which hold no credentials in these tests).
"""

from __future__ import annotations

import base64
import contextlib
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

MIN_SECRET_LENGTH = 12
SKIPPED_TYPES = frozenset({"helm.sh/release.v1"})
SKIPPED_KEYS = frozenset({"ca.crt", "tls.crt", "credentials.json", "namespace"})
WATCH_SECONDS = 10
"""Each watch call's server-side timeout: the loop re-lists until the session ends, and a stop
waits at most this long for a quiet watch to return."""


@dataclass
class Leak:
    """A Secret's value found where it must not be."""

    secret: str
    where: str

    def __str__(self) -> str:
        return f"a value of Secret {self.secret} appears in {self.where}"


@dataclass
class SecretWatch:
    """Records Secret values and Event messages while the session runs (a daemon thread each)."""

    api: client.ApiClient
    values: dict[str, str] = field(default_factory=dict)
    """value -> ``namespace/name[key]`` of the Secret it came from."""
    events: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._watch_secrets, self._watch_events):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(WATCH_SECONDS + 10)

    def _stream(self, list_call: Any) -> Iterator[Any]:
        """Objects of every watch event until ``stop``; an API error waits a second and re-lists."""
        while not self.stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(list_call, timeout_seconds=WATCH_SECONDS):
                    yield event["object"]
                    if self.stop.is_set():
                        break
            except (ApiException, OSError, ValueError, urllib3.exceptions.HTTPError):
                # urllib3's errors too: the API server restarted by a fault test refuses
                # connections for a while, and the next list catches up on what it missed.
                self.stop.wait(1)
            finally:
                stream.stop()

    def _watch_secrets(self) -> None:
        core = client.CoreV1Api(self.api)
        for secret in self._stream(core.list_secret_for_all_namespaces):
            if secret.type in SKIPPED_TYPES:
                continue
            name = f"{secret.metadata.namespace}/{secret.metadata.name}"
            for key, encoded in (secret.data or {}).items():
                if key in SKIPPED_KEYS:
                    continue
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    self._record(base64.b64decode(encoded).decode(), f"{name}[{key}]")

    def _record(self, value: str, origin: str) -> None:
        candidates = {value.strip()}
        if "://" in value:  # a URL's password is a secret of its own (redis://:pw@host)
            with contextlib.suppress(ValueError):
                password = urllib.parse.urlsplit(value.strip()).password
                if password:
                    candidates.add(password)
        with self.lock:
            for candidate in candidates:
                if len(candidate) >= MIN_SECRET_LENGTH and "BEGIN CERTIFICATE" not in candidate:
                    self.values.setdefault(candidate, origin)

    def _watch_events(self) -> None:
        core = client.CoreV1Api(self.api)
        for event in self._stream(core.list_event_for_all_namespaces):
            with self.lock:
                self.events.append(f"{event.reason}: {event.message or ''}")

    def leaks(self, log_dir: Path) -> list[Leak]:
        """Every (Secret, place) pair where one of the recorded values appears."""
        with self.lock:
            values = dict(self.values)
            events = list(self.events)
        found: list[Leak] = []
        for path in sorted(p for p in log_dir.rglob("*") if p.is_file()):
            text = path.read_text(errors="replace")
            found += [Leak(origin, str(path)) for value, origin in values.items() if value in text]
        for message in events:
            found += [
                Leak(o, "an Event's message") for value, o in values.items() if value in message
            ]
        return found
