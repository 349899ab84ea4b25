"""SigV4 signatures for AWS Bedrock requests, by AWS's own signer (``awscrt``).

:func:`signed_headers` returns the headers of one request signed with an access key pair:
``X-Amz-Date``, ``Authorization`` and, for temporary credentials, ``X-Amz-Security-Token``.
The signing is awscrt's (the AWS Common Runtime, maintained by AWS; botocore's signer cannot
be installed beside the pinned Kubernetes client, docs/providers.md): nothing here computes a
hash or an HMAC. :func:`parse_credentials` reads a provider key's Secret value.

Failure behaviour: a key that is not ``<id>:<secret>[:<token>]`` is a :class:`ValueError`
whose message never holds the key; awscrt's own errors pass as they are (the router treats
both as the key's fault).
"""

from __future__ import annotations

import asyncio
import datetime
import io
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

SERVICE: Final = "bedrock"
"""The signing name of Bedrock's runtime endpoints."""


@dataclass(frozen=True)
class Credentials:
    """An AWS access key pair, with a session token for temporary credentials."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def parse_credentials(value: str) -> Credentials:
    """``<access key id>:<secret access key>[:<session token>]`` as :class:`Credentials`.

    Raises:
        ValueError: not that shape (the message never holds the value).
    """
    parts = value.strip().split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(
            "a bedrock key's Secret must hold <access key id>:<secret access key>[:<session token>]"
        )
    return Credentials(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


async def signed_headers(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    now: datetime.datetime | None = None,
    service: str = SERVICE,
) -> dict[str, str]:
    """``headers`` plus ``Host`` and the SigV4 signature of the request (``now``: its time)."""
    # Imported here, as redis is for shared limits: a router without Bedrock providers never
    # loads the native library.
    from awscrt import auth, http

    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = http.HttpRequest(
        method,
        path,
        http.HttpHeaders([("Host", parts.netloc), *headers.items()]),
        io.BytesIO(body),
    )
    provider = auth.AwsCredentialsProvider.new_static(
        credentials.access_key_id, credentials.secret_access_key, credentials.session_token
    )
    config = auth.AwsSigningConfig(
        credentials_provider=provider,
        region=region,
        service=service,
        date=now or datetime.datetime.now(datetime.UTC),
    )
    signed = await asyncio.wrap_future(auth.aws_sign_request(request, config))
    return dict(signed.headers)
