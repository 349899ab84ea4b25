"""The e2e session's leak check finds a recorded secret in a log file or an Event, and names it."""

from __future__ import annotations

from e2e.leaks import MIN_SECRET_LENGTH, SecretWatch
from kubernetes import client


def watch_with(values: dict[str, str]) -> SecretWatch:
    watch = SecretWatch(client.ApiClient())
    for value, origin in values.items():
        watch._record(value, origin)
    return watch


def test_a_key_in_a_log_file_is_a_leak_named_by_secret_and_file(tmp_path):
    (tmp_path / "pods" / "ns_router").mkdir(parents=True)
    log = tmp_path / "pods" / "ns_router" / "router.log"
    log.write_text('{"path": "/v1/chat/completions", "key": "sk-live-0123456789abcdef"}\n')
    (tmp_path / "apiserver.log").write_text("nothing to see\n")
    watch = watch_with({"sk-live-0123456789abcdef": "team/app-key[api-key]"})
    (leak,) = watch.leaks(tmp_path)
    assert str(leak) == f"a value of Secret team/app-key[api-key] appears in {log}"
    assert "sk-live" not in str(leak)


def test_a_password_inside_a_url_and_an_event_message(tmp_path):
    watch = watch_with({"redis://:hunter2hunter2xx@redis.example:6379/0": "ns/redis[url]"})
    watch.events.append("Failed: cannot reach redis with hunter2hunter2xx")
    (leak,) = watch.leaks(tmp_path)
    assert leak.where == "an Event's message"


def test_short_values_and_certificates_are_not_recorded(tmp_path):
    watch = watch_with(
        {"x" * (MIN_SECRET_LENGTH - 1): "ns/s[a]", "-----BEGIN CERTIFICATE-----\nMIIB": "ns/s[b]"}
    )
    assert watch.values == {}
    (tmp_path / "a.log").write_text("x" * 40)
    assert watch.leaks(tmp_path) == []
