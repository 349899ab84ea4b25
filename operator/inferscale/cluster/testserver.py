"""A tiny HTTP server, the image ``inferscale.io/testing/http-echo`` of the cluster's tests.

Standard library only, so it starts fast in every pod. It answers:

* ``/`` with who it is (pod name, namespace, address), ``/healthz`` (503 with
  ``--never-ready``), and ``/metrics`` in Prometheus text format
  (``testserver_requests_total``, ``testserver_up``);
* ``/kube?path=/api/...``: calls the API server the way in-cluster clients do (the mounted
  service-account token and CA, ``KUBERNETES_SERVICE_HOST``/``PORT``) and reports the status;
* ``/fetch?url=...``: fetches another URL from inside the pod (pod-to-pod reachability).

On SIGTERM it logs that it got one, stops serving and exits 0, as a well-behaved server does.
``--exit-after S --exit-code N`` makes it crash on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class _State:
    requests = 0
    never_ready = False
    lock = threading.Lock()


def _kube(path: str) -> dict[str, object]:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    try:
        with open(f"{SA_DIR}/token") as f:
            token = f.read().strip()
    except OSError as error:
        return {"error": f"no service-account token: {error}"}
    context = ssl.create_default_context(cafile=f"{SA_DIR}/ca.crt")
    request = urllib.request.Request(
        f"https://{host}:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return {"status": response.status}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read().decode(errors="replace")[:500]}
    except (urllib.error.URLError, OSError) as error:
        return {"error": str(error)}


def _fetch(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return {"status": response.status, "body": response.read().decode(errors="replace")}
    except urllib.error.HTTPError as error:
        return {"status": error.code}
    except (urllib.error.URLError, OSError) as error:
        return {"error": str(error)}


class Handler(BaseHTTPRequestHandler):
    """The endpoints listed in the module docstring."""

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: probes and scrapes would flood the pod log."""

    def _send(self, code: int, body: object, content_type: str = "application/json") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """Route by path."""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        with _State.lock:
            _State.requests += 1
            count = _State.requests
        if url.path == "/healthz":
            self._send(
                503 if _State.never_ready else 200,
                "not ready" if _State.never_ready else "ok",
                "text/plain",
            )
        elif url.path == "/metrics":
            text = (
                "# HELP testserver_requests_total Requests served.\n"
                "# TYPE testserver_requests_total counter\n"
                f"testserver_requests_total {count}\n"
                "# HELP testserver_up Always 1.\n# TYPE testserver_up gauge\ntestserver_up 1\n"
            )
            self._send(200, text, "text/plain; version=0.0.4")
        elif url.path == "/kube":
            self._send(200, _kube(query.get("path", "/api")))
        elif url.path == "/fetch":
            self._send(200, _fetch(query.get("url", "")))
        else:
            self._send(
                200,
                {
                    "pod": os.environ.get("POD_NAME", socket.gethostname()),
                    "namespace": os.environ.get("POD_NAMESPACE", ""),
                    "ip": os.environ.get("POD_IP", ""),
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )


class Server(ThreadingHTTPServer):
    """``HTTPServer`` without its reverse DNS lookup of the bind address at start-up."""

    daemon_threads = True

    def server_bind(self) -> None:
        """Bind, and name the server after the bind address instead of asking DNS."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="testserver")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--never-ready", action="store_true", help="/healthz always answers 503")
    parser.add_argument("--exit-after", type=float, default=None, help="crash after S seconds")
    parser.add_argument("--exit-code", type=int, default=1)
    args = parser.parse_args(argv)
    _State.never_ready = args.never_ready
    server = Server((args.host, args.port), Handler)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        print(f"received {signal.Signals(signum).name}; shutting down", flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    if args.exit_after is not None:

        def crash() -> None:
            time.sleep(args.exit_after)
            print(f"exiting with {args.exit_code} on purpose", flush=True)
            os._exit(args.exit_code)

        threading.Thread(target=crash, daemon=True).start()
    print(f"serving on {args.host}:{args.port}", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
