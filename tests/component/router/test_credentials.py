"""The credentials channel on a real router: the admin API, the credentials file, provider keys.

Covers what the operator and the provider backends rely on: ``PUT /admin/v1/credentials``
refuses older versions and bad documents (without quoting them), the file is read at start and
re-read when it changes, ``Router.provider_key`` returns the current key, and nothing secret is
logged or answered.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from inferscale.protocol.credentials import key_digest
from tests.component.router.conftest import TOKEN, RunningRouter

PROVIDER_KEY = "sk-provider-0123456789"
CLIENT_KEY = "client-key-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def doc(version: int, provider_key: str = PROVIDER_KEY, **extra) -> dict:
    return {
        "version": version,
        "providerKeys": {"team/openai": provider_key},
        "clientKeys": [{"digest": key_digest(CLIENT_KEY), "client": "team/app"}],
        **extra,
    }


def put(router: RunningRouter, body: object, headers: dict[str, str] = AUTH) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.put(
        router.base_url + "/admin/v1/credentials", content=content, headers=headers, timeout=10
    )


def get(router: RunningRouter) -> httpx.Response:
    return httpx.get(router.base_url + "/admin/v1/credentials", headers=AUTH, timeout=10)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_pushed_credentials_are_held_and_summarised_without_secrets(router):
    assert get(router).status_code == 404
    resp = put(router, doc(5))
    assert resp.status_code == 200 and resp.json() == {"version": 5, "changed": True}
    assert router.router is not None
    assert router.router.provider_key("team/openai") == PROVIDER_KEY
    assert router.router.provider_key("team/missing") is None
    summary = get(router)
    assert summary.status_code == 200
    assert summary.json() == {
        "version": 5,
        "requireClientKey": False,
        "providers": ["team/openai"],
        "clients": ["team/app"],
        "clientKeys": 1,
    }
    assert PROVIDER_KEY not in summary.text and key_digest(CLIENT_KEY) not in summary.text
    assert put(router, doc(5)).json() == {"version": 5, "changed": False}


def test_older_or_conflicting_versions_get_409(router):
    assert put(router, doc(5)).status_code == 200
    older = put(router, doc(4))
    assert older.status_code == 409 and older.json()["error"]["code"] == "stale_version"
    conflicting = put(router, doc(5, provider_key="sk-other-0123456789"))
    assert conflicting.status_code == 409
    assert router.router is not None and router.router.provider_key("team/openai") == PROVIDER_KEY
    assert put(router, doc(6, provider_key="sk-rotated-0123456789")).status_code == 200
    assert router.router.provider_key("team/openai") == "sk-rotated-0123456789"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"version": 1, "providerKeys": {"bad id": PROVIDER_KEY}}).encode(),
        json.dumps({"version": 1, "providerKeys": {"a/b": PROVIDER_KEY}, "x": 1}).encode(),
        json.dumps(
            {"version": 1, "clientKeys": [{"digest": PROVIDER_KEY, "client": "a/b"}]}
        ).encode(),
    ],
)
def test_invalid_credentials_get_400_without_being_quoted(router, body):
    resp = put(router, body)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("invalid credentials")
    assert PROVIDER_KEY not in resp.text


def test_the_admin_token_guards_the_credentials(router):
    assert put(router, doc(1), headers={}).status_code == 401
    assert put(router, doc(1), headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(router.base_url + "/admin/v1/credentials", timeout=10).status_code == 401


def test_the_credentials_file_is_read_at_start_and_on_change(tmp_path, caplog):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(doc(3)))
    with RunningRouter(credentials_file=str(path), table_poll_seconds=0.05) as r:
        assert r.router is not None and r.router.access.version == 3
        assert r.router.provider_key("team/openai") == PROVIDER_KEY
        # The kubelet updates the mounted Secret: the router takes the newer version.
        path.write_text(json.dumps(doc(4, provider_key="sk-rotated-0123456789")))
        wait_for(lambda: r.router.access.version == 4)
        assert r.router.provider_key("team/openai") == "sk-rotated-0123456789"
        # A push of something newer wins; the file's older version is then ignored.
        assert put(r, doc(9)).status_code == 200
        with caplog.at_level(logging.WARNING, logger="inferscale.router"):
            path.write_text(json.dumps(doc(8, provider_key="sk-older-0123456789")))
            time.sleep(0.3)
            assert r.router.access.version == 9
            # A broken file is reported without its content and changes nothing.
            path.write_text('{"version": 10, "providerKeys": {"bad": "sk-leak-0123456789"}}')
            wait_for(lambda: any("invalid" in m for m in caplog.messages))
        assert r.router.access.version == 9
        assert not any("sk-leak" in m or PROVIDER_KEY in m for m in caplog.messages)


def test_a_missing_or_broken_file_at_start_leaves_the_router_serving(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="inferscale.router"):
        with RunningRouter(credentials_file=str(tmp_path / "absent.json")) as r:
            assert r.router is not None and r.router.access.credentials is None
            assert httpx.get(r.base_url + "/healthz", timeout=10).status_code == 200
        broken = tmp_path / "broken.json"
        broken.write_text('{"version": 1, "providerKeys": {"x": "sk-leak-0123456789"}}')
        with RunningRouter(credentials_file=str(broken)) as r:
            assert r.router is not None and r.router.access.credentials is None
    assert any("no usable credentials" in m for m in caplog.messages)
    assert not any("sk-leak" in m for m in caplog.messages)


def test_no_access_log_line_holds_a_key(router):
    put(router, doc(1))
    assert not any(PROVIDER_KEY in line for line in router.lines)
