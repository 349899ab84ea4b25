"""Certificates and keys of the local cluster, made with the ``openssl`` command.

One CA signs the serving certificate shared by the API server, the controller
manager and the scheduler (SANs: loopback, localhost, the bridge address and the
``kubernetes.default`` names), and the admin client certificate (group ``system:masters``) that
every component and the test harness use; a second CA signs only the API server's client
certificate for the aggregation layer (``ensure_front_proxy``). The service-account key pair
signs and checks bound tokens. Keys never leave the state directory. The openssl CLI is used
rather than a Python crypto package so that nothing beyond Debian's base system is needed.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from inferscale.cluster.process import ClusterError

VALID_DAYS = "3650"


@dataclass(frozen=True)
class Pki:
    """Paths of the files ``ensure_pki`` made."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        """The cluster CA's certificate."""
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The cluster CA's key."""
        return self.dir / "ca.key"

    @property
    def serving_crt(self) -> Path:
        """Serving certificate of the control-plane components."""
        return self.dir / "serving.crt"

    @property
    def serving_key(self) -> Path:
        """Key of ``serving_crt``."""
        return self.dir / "serving.key"

    @property
    def admin_crt(self) -> Path:
        """Client certificate of the admin (CN inferscale-admin, O system:masters)."""
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        """Key of ``admin_crt``."""
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        """Service-account token signing key."""
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        """Service-account token verification key."""
        return self.dir / "sa.pub"


def _openssl(*args: str) -> None:
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as error:
        raise ClusterError(
            "pki", "the openssl command is missing (apt-get install openssl)"
        ) from error
    except subprocess.CalledProcessError as error:
        raise ClusterError("pki", f"openssl {args[0]} failed:\n{error.stderr}") from error


def _key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)


def _make_ca(crt: Path, key: Path, name: str) -> None:
    _key(key)
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={name}",
        "-days", VALID_DAYS, "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(crt),
    )  # fmt: skip


def _sign(
    pki: Pki, name: str, subject: str, extensions: str, ca: tuple[Path, Path] | None = None
) -> None:
    """``NAME.crt`` and ``NAME.key``, signed by the cluster CA or by ``ca`` (cert, key)."""
    ca_crt, ca_key = ca or (pki.ca_crt, pki.ca_key)
    key, csr, crt = pki.dir / f"{name}.key", pki.dir / f"{name}.csr", pki.dir / f"{name}.crt"
    ext = pki.dir / f"{name}.ext"
    _key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", VALID_DAYS, "-sha256", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()


def ensure_pki(directory: Path, ips: list[str], dns_names: list[str]) -> Pki:
    """Create the CA and every certificate and key in ``directory`` unless already there.

    Existing files are kept so that a restarted cluster keeps its identity (tokens and
    kubeconfigs stay valid) as long as its state directory lives.
    """
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not pki.ca_crt.exists():
        _make_ca(pki.ca_crt, pki.ca_key, "inferscale-local-ca")
    if not pki.serving_crt.exists():
        sans = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{name}" for name in dns_names)])
        _sign(
            pki, "serving", "/CN=kube-apiserver",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
        )  # fmt: skip
    if not pki.admin_crt.exists():
        _sign(
            pki, "admin", "/O=system:masters/CN=inferscale-admin",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )  # fmt: skip
    if not pki.sa_key.exists():
        _openssl(
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(pki.sa_key),
        )
        pki.sa_key.chmod(0o600)
        _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki


def ensure_client_cert(pki: Pki, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
    """A client certificate ``NAME.crt`` (key ``NAME.key``) for ``user`` in ``groups``.

    The kubelet of the container node authenticates as ``system:node:NAME`` in
    ``system:nodes``, which the API server's Node authorizer expects. Kept when it exists.
    """
    crt = pki.dir / f"{name}.crt"
    if not crt.exists():
        subject = "".join(f"/O={group}" for group in groups) + f"/CN={user}"
        _sign(
            pki, name, subject,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )  # fmt: skip
    return crt


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, pki: Pki, server: str, cluster_name: str, client: str = "admin"
) -> None:
    """Write a kubeconfig with every credential embedded, so the file stands alone.

    ``client`` names the certificate pair in the PKI directory (``admin``: system:masters).
    """
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_crt)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": _b64(pki.dir / f"{client}.crt"),
                    "client-key-data": _b64(pki.dir / f"{client}.key"),
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": "admin"}}],
        "current-context": cluster_name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


FRONT_PROXY_CLIENT = "front-proxy-client"
"""The name of the API server's client certificate for extension API servers."""


def ensure_front_proxy(pki: Pki) -> tuple[Path, Path]:
    """The aggregation layer's CA and the API server's client certificate that it signs.

    Any certificate of the request-header CA named ``front-proxy-client`` may pass any user in
    headers, so that CA signs nothing else: a CA of its own, as kubeadm's front-proxy-ca, not the
    cluster CA, which also signs approved CertificateSigningRequests (the controller manager's
    signer). Returns the CA's certificate and the client certificate (its key beside it,
    ``.key``); both are kept when they exist.
    """
    ca, ca_key = pki.dir / "front-proxy-ca.crt", pki.dir / "front-proxy-ca.key"
    if not ca.exists():
        _make_ca(ca, ca_key, "inferscale-front-proxy-ca")
    crt = pki.dir / f"{FRONT_PROXY_CLIENT}.crt"
    if not crt.exists():
        _sign(
            pki, FRONT_PROXY_CLIENT, f"/CN={FRONT_PROXY_CLIENT}",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
            ca=(ca, ca_key),
        )  # fmt: skip
    return ca, crt
