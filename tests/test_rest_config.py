"""The REST front's pieces that need no model: the `rest:` config section, the JSON bounds
scan, the parse pool's inline/thread/queue rules, and reload's restart-only keys (no
TensorFlow; the listener itself is covered by test_rest_front.py)."""

from __future__ import annotations

import asyncio
import copy
import json
import threading

import pytest

from proxy.config import ConfigError, RestParse, validate_config
from proxy.errors import Reason, Reject
from proxy.rest import body
from proxy.rest.jsonbounds import JsonBounds, check
from proxy.rest.pool import ParsePool
from proxy.service import restart_only_changes

BASE = {"listen": {"address": "127.0.0.1:0", "plaintext": True},
        "upstreams": {"serving": {"address": "127.0.0.1:8500",
                                  "rest_address": "http://127.0.0.1:8501"}},
        "policy": {"rules": []}}


def with_rest(rest: dict, **upstream: object) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["rest"] = rest
    cfg["upstreams"]["serving"].update(upstream)
    return cfg


class TestConfig:
    def test_loopback_plaintext_native(self) -> None:
        cfg = validate_config(with_rest({"address": "127.0.0.1:8601", "plaintext": True}))
        assert cfg.rest is not None and cfg.rest.upstream == "native"
        assert cfg.upstreams["serving"].rest_address == "http://127.0.0.1:8501"

    @pytest.mark.parametrize("rest, upstream, where", [
        ({"address": "0.0.0.0:8601", "plaintext": True}, {}, "rest.plaintext"),
        ({"address": "127.0.0.1:8601"}, {}, "rest"),  # neither tls nor plaintext
        ({"plaintext": True}, {"rest_address": None}, "upstreams.serving.rest_address"),
        ({"plaintext": True}, {"rest_address": "ftp://h:1"}, "upstreams.serving.rest_address"),
        ({"plaintext": True}, {"rest_address": "http://h:1/v1"}, "upstreams.serving.rest_address"),
        ({"plaintext": True, "json_bounds": {"max_depth": 2}}, {}, "rest.json_bounds.max_depth"),
        ({"plaintext": True, "max_body_bytes": 100}, {}, "rest.parse.inline_below_bytes"),
        ({"plaintext": True, "bogus": 1}, {}, "rest.bogus"),
    ])
    def test_refused(self, rest, upstream, where) -> None:
        with pytest.raises(ConfigError) as info:
            validate_config(with_rest(rest, **upstream))
        assert info.value.path == where

    def test_translate_needs_no_rest_address(self) -> None:
        cfg = validate_config(with_rest({"plaintext": True, "upstream": "translate"},
                                        rest_address=None))
        assert cfg.rest is not None and cfg.rest.upstream == "translate"

    def test_certificate_rules_need_a_listener_that_takes_certificates(self) -> None:
        rule = {"principals": {"spiffe": ["spiffe://x/y"]}, "methods": ["Predict"],
                "models": ["m"]}
        cfg = with_rest({"plaintext": True})
        cfg["policy"]["rules"] = [rule]
        with pytest.raises(ConfigError, match="must include token"):
            validate_config(cfg)

    def test_restart_only_keys(self) -> None:
        old = validate_config(with_rest({"plaintext": True}))
        moved = validate_config(with_rest({"plaintext": True, "address": "127.0.0.1:9"}))
        capped = validate_config(with_rest({"plaintext": True, "max_body_bytes": 1 << 20}))
        assert restart_only_changes(old, moved) == ["rest.address"]
        assert restart_only_changes(old, capped) == []  # body caps follow a reload
        assert restart_only_changes(old, validate_config(BASE)) == ["rest"]


def parse(doc: bytes, **bounds: int) -> object:
    return body.parse_json(doc, JsonBounds(**bounds))


class TestJsonBounds:
    def test_depth_counts_arrays_and_objects_not_strings(self) -> None:
        nested = b'{"a":' + b"[{\"b\":" * 5 + b"1" + b"}]" * 5 + b"}"  # depth 11
        assert parse(nested, max_depth=11)
        with pytest.raises(Reject, match="nested deeper than 10"):
            parse(nested, max_depth=10)
        assert parse(b'{"a": "[[[[[[[[[[[[[[[[", "b": "\\"[[[["}', max_depth=4)

    def test_string_length_as_sent_escapes_included(self) -> None:
        assert parse(json.dumps({"k": "x" * 1024}).encode(), max_string_bytes=1024)
        with pytest.raises(Reject, match="string longer than 1024"):
            parse(json.dumps({"k": "x" * 1025}).encode(), max_string_bytes=1024)
        with pytest.raises(Reject, match="string longer"):  # 600 escapes = 1200 bytes sent
            parse(json.dumps({"k": '"' * 600}).encode(), max_string_bytes=1024)
        with pytest.raises(Reject, match="string longer"):  # a key is a string too
            parse(json.dumps({"k" * 1025: 1}).encode(), max_string_bytes=1024)

    def test_numbers_measured_only_outside_strings(self) -> None:
        digits = "1" * 100
        assert parse(json.dumps({"s": digits, "t": "e-" + digits}).encode(),
                     max_number_chars=50) == {"s": digits, "t": "e-" + digits}
        with pytest.raises(Reject, match="number of 101 characters"):
            parse(b'{"n": -' + digits.encode() + b"}", max_number_chars=50)
        with pytest.raises(Reject, match="number of 102 characters"):
            parse(b'{"n": 0.' + digits.encode() + b"}", max_number_chars=50)

    def test_scan_reports_when_numbers_must_be_measured(self) -> None:
        bounds = JsonBounds(max_number_chars=50)
        assert check(b'{"a": [1.5, 2.5]}', bounds) is False
        assert check(b'{"a": "' + b"9" * 60 + b'"}', bounds) is True  # suspect only


def run(coro):
    return asyncio.run(coro)


class TestParsePool:
    def test_small_inline_large_on_a_thread(self) -> None:
        pool = ParsePool(RestParse(threads=1, inline_below_bytes=100, max_queued_bytes=1000))
        main = threading.current_thread()

        async def go() -> tuple[bool, bool]:
            small = await pool.run(10, lambda _: threading.current_thread() is main, None)
            large = await pool.run(500, lambda _: threading.current_thread() is main, None)
            forced = await pool.run(10, lambda _: threading.current_thread() is main, None,
                                    may_inline=False)
            return small, large and not forced

        assert run(go()) == (True, False)
        pool.close()

    def test_queue_cap_refuses_and_cancelled_work_counts_until_done(self) -> None:
        pool = ParsePool(RestParse(threads=1, inline_below_bytes=0, max_queued_bytes=1000))
        release = threading.Event()

        async def go() -> list[object]:
            held = asyncio.ensure_future(pool.run(800, lambda _: release.wait(30), None))
            await asyncio.sleep(0.05)
            with pytest.raises(Reject) as info:
                await pool.run(300, lambda _: None, None)
            assert info.value.reason is Reason.OVERLOADED
            held.cancel()  # the thread goes on: its bytes still count
            await asyncio.sleep(0.05)
            still = pool.queued
            release.set()
            for _ in range(200):
                if pool.queued == 0:
                    break
                await asyncio.sleep(0.01)
            return [still, pool.queued, await pool.run(300, lambda x: x + 1, 1)]

        assert run(go()) == [800, 0, 2]
        pool.close()
