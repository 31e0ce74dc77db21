"""proxy.oplog: console and JSON lines, the level, the standard library routed through the
same format, one line per event even for multi-line values, and a broken stream never
failing the code that logs. Each test restores the default configuration afterwards."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from proxy import oplog


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    oplog.configure()


def test_console_lines() -> None:
    out = io.StringIO()
    oplog.configure("console", "info", stream=out)
    log = oplog.get_logger()
    log.info("reload", outcome="ok", restart_only=["listen.address"])
    log.error("reload", outcome="refused", key="policy.rules[0]", error="not valid YAML:\nline 2")
    log.debug("hidden")
    assert out.getvalue().splitlines() == [
        'tfgate: reload outcome=ok restart_only=["listen.address"]',
        'tfgate: error: reload outcome=refused key=policy.rules[0] error="not valid YAML:\\nline 2"',
    ]


def test_json_lines_carry_level_logger_time_and_static_fields() -> None:
    out = io.StringIO()
    oplog.configure("json", "debug", stream=out, worker=1)
    oplog.get_logger().debug("start", address="127.0.0.1:1")
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "start" and line["level"] == "debug"
    assert line["logger"] == "tfgate" and line["worker"] == 1 and line["timestamp"]


def test_stdlib_logging_is_written_in_the_same_format() -> None:
    out = io.StringIO()
    oplog.configure("json", "warning", stream=out)
    logging.getLogger("grpc._cython").warning("something %s", "odd")
    logging.getLogger("asyncio").info("below the level")
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "something odd" and line["logger"] == "grpc._cython"


def test_a_closed_stream_never_fails_the_caller() -> None:
    out = io.StringIO()
    oplog.configure("console", "info", stream=out)
    out.close()
    oplog.get_logger().error("internal error", method="/x")  # must not raise
    logging.getLogger("grpc").error("also not")
