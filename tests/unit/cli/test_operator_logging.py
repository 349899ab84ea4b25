"""The operator's log filter drops kopf's per-watch-event success lines and nothing else."""

import logging

import kopf
import pytest
from kopf._core.actions.loggers import LocalObjectLogger, ObjectLogger

from inferscale.cli.operator import quiet_watch_successes

BODY = kopf.Body({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}})


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def captured():
    logger = logging.getLogger("kopf.objects")
    capture = Capture()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    logger.addFilter(quiet_watch_successes)
    yield capture.messages
    logger.removeFilter(quiet_watch_successes)
    logger.removeHandler(capture)
    logger.setLevel(level)


def test_only_watch_event_successes_are_dropped(captured):
    settings = kopf.OperatorSettings()
    watch = LocalObjectLogger(body=BODY, settings=settings)
    changing = ObjectLogger(body=BODY, settings=settings)
    watch.info("Handler 'routing_model_pod_event' succeeded.")
    watch.info("reconcile of ns/m after a child event: the Secret is missing")
    watch.warning("Handler 'routing_model_pod_event' succeeded.")
    changing.info("Handler 'inference_model_reconcile' succeeded.")
    assert captured == [
        "reconcile of ns/m after a child event: the Secret is missing",
        "Handler 'routing_model_pod_event' succeeded.",
        "Handler 'inference_model_reconcile' succeeded.",
    ]


def test_a_record_without_kopfs_marks_is_kept():
    record = logging.LogRecord(
        "kopf.objects", logging.INFO, "f", 1, "Handler 'x' succeeded.", (), None
    )
    assert quiet_watch_successes(record)
