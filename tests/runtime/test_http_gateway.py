"""Requests -> API Gateway HTTP API v2 events -> responses, as API Gateway shapes them."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from satflow_dev.runtime.http_gateway import RouteTable, build_http_api_event, response_from_result
from satflow_dev.runtime.template import FunctionSpec, HttpRoute

FN = FunctionSpec("Fn", "fn", "arn:fn", Path("."), "app.handler", {})
OTHER = FunctionSpec("Other", "other", "arn:other", Path("."), "app.handler", {})


def _table() -> RouteTable:
    return RouteTable([
        (HttpRoute("GET", "/v1/payments/{payment_id}", "GetPayment"), FN),
        (HttpRoute("GET", "/v1/payments/recent", "Recent"), FN),
        (HttpRoute("ANY", "/v1/payments/{payment_id}", "AnyPayment"), OTHER),
        (HttpRoute("ANY", "/files/{path+}", "Files"), FN),
        (HttpRoute("POST", "/v1/transfers", "Transfer"), FN),
    ])


def test_route_matching_prefers_literals_then_exact_methods():
    table = _table()
    m = table.match("GET", "/v1/payments/pay_123")
    assert (m.route.route_key, m.path_parameters) == ("GET /v1/payments/{payment_id}", {"payment_id": "pay_123"})
    assert table.match("GET", "/v1/payments/recent").route.event_name == "Recent"
    assert table.match("DELETE", "/v1/payments/pay_1").function is OTHER  # ANY catches other methods
    assert table.match("GET", "/files/a/b%20c.txt").path_parameters == {"path": "a/b c.txt"}
    assert table.match("GET", "/v1/transfers") is None
    assert table.match("POST", "/v1/transfers/") is None
    assert table.match("GET", "/v1/payments/a/b") is None


def test_event_shape_matches_api_gateway_v2():
    match = _table().match("GET", "/v1/payments/pay_1")
    event = build_http_api_event(
        method="GET", raw_path="/v1/payments/pay_1", raw_query="tag=a&tag=b&q=x%20y&empty=",
        headers=[("Host", "127.0.0.1:3000"), ("X-Dup", "1"), ("x-dup", "2"), ("Cookie", "s=1; t=2"),
                 ("User-Agent", "curl/8")],
        body=b"", match=match, source_ip="10.0.0.9", request_id="req-1", now=1_700_000_000.5)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /v1/payments/{payment_id}"
    assert event["rawPath"] == "/v1/payments/pay_1"
    assert event["rawQueryString"] == "tag=a&tag=b&q=x%20y&empty="
    assert event["queryStringParameters"] == {"tag": "a,b", "q": "x y", "empty": ""}
    assert event["pathParameters"] == {"payment_id": "pay_1"}
    assert event["headers"]["x-dup"] == "1,2"
    assert "cookie" not in event["headers"] and event["cookies"] == ["s=1", "t=2"]
    assert event["isBase64Encoded"] is False and "body" not in event
    ctx = event["requestContext"]
    assert ctx["http"] == {"method": "GET", "path": "/v1/payments/pay_1", "protocol": "HTTP/1.1",
                           "sourceIp": "10.0.0.9", "userAgent": "curl/8"}
    assert (ctx["requestId"], ctx["stage"], ctx["routeKey"]) == ("req-1", "$default", event["routeKey"])
    assert ctx["timeEpoch"] == 1_700_000_000_500 and ctx["time"] == "14/Nov/2023:22:13:20 +0000"


def test_empty_parts_are_left_out_and_binary_bodies_are_base64():
    match = _table().match("POST", "/v1/transfers")
    event = build_http_api_event(method="POST", raw_path="/v1/transfers", raw_query="", headers=[],
                                 body=b"\xff\xfe\x00", match=match)
    assert "queryStringParameters" not in event and "pathParameters" not in event and "cookies" not in event
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe\x00"
    text = build_http_api_event(method="POST", raw_path="/v1/transfers", raw_query="", headers=[],
                                body='{"memo": "für"}'.encode(), match=match)
    assert (text["body"], text["isBase64Encoded"]) == ('{"memo": "für"}', False)


def test_results_are_interpreted_like_api_gateway():
    plain = response_from_result({"a": 1})
    assert (plain.status, json.loads(plain.body)) == (200, {"a": 1})
    assert ("content-type", "application/json") in plain.headers
    full = response_from_result({"statusCode": 202, "headers": {"x-a": "1"}, "multiValueHeaders": {"x-m": ["1", "2"]},
                                 "cookies": ["c=1"], "body": base64.b64encode(b"\x00\x01").decode(),
                                 "isBase64Encoded": True})
    assert full.status == 202 and full.body == b"\x00\x01"
    assert {("x-a", "1"), ("x-m", "1"), ("x-m", "2"), ("set-cookie", "c=1")} <= set(full.headers)


# -- over a socket, through the tiny runtime's handler


def _request(runtime, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(runtime.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_served_event_reaches_the_handler_with_path_params_and_env(tiny_runtime):
    status, _, body = _request(tiny_runtime, "GET", "/items/42?a=1&a=2", headers={"Cookie": "k=v"})
    assert status == 200
    seen = json.loads(body)
    assert seen["event"]["routeKey"] == "GET /items/{item_id}"
    assert seen["event"]["pathParameters"] == {"item_id": "42"}
    assert seen["event"]["queryStringParameters"] == {"a": "1,2"}
    assert seen["event"]["cookies"] == ["k=v"]
    assert seen["env"]["AWS_ENDPOINT_URL"] == tiny_runtime.moto_url
    assert seen["env"]["TABLE"].startswith("satflow-local-tiny-")
    assert seen["context"]["function_name"] == "satflow-local-EchoFunction"
    assert seen["context"]["memory"] == 256 and 0 < seen["context"]["remaining_ms"] <= 5000
    status, _, body = _request(tiny_runtime, "GET", "/items/special")
    assert json.loads(body)["event"]["routeKey"] == "GET /items/special"


def test_served_binary_request_and_response(tiny_runtime):
    status, _, body = _request(tiny_runtime, "POST", "/items", body=b"\xff\x00raw")
    event = json.loads(body)["event"]
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\xff\x00raw"
    status, headers, body = _request(tiny_runtime, "GET", "/proxy/binary")
    assert (status, body) == (201, bytes([255, 0, 1]))
    assert headers.get_all("set-cookie") == ["a=1", "b=2"]
    assert headers.get_all("x-multi") == ["1", "2"]


def test_served_results_without_status_and_failures(tiny_runtime):
    assert _request(tiny_runtime, "PUT", "/proxy/plain")[::2] == (200, b'{"hello": "world"}')
    status, _, body = _request(tiny_runtime, "GET", "/nowhere")
    assert (status, json.loads(body)) == (404, {"message": "Not Found"})
    status, _, body = _request(tiny_runtime, "DELETE", "/items/1")  # the path exists, the method does not
    assert status == 404
    status, _, body = _request(tiny_runtime, "GET", "/proxy/crash")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})


def test_dev_routes_are_served_before_template_routes(tiny_runtime):
    calls = []

    def simulator(method, path, body):
        calls.append((method, path, body))
        return 202, {"ok": True}

    tiny_runtime.gateway.register_dev_route("/_sim/test", simulator)
    status, _, body = _request(tiny_runtime, "POST", "/_sim/test/pay", body=b'{"amount": 1}')
    assert (status, json.loads(body)) == (202, {"ok": True})
    assert calls == [("POST", "/_sim/test/pay", {"amount": 1})]
    assert _request(tiny_runtime, "GET", "/_sim/other")[0] == 404
    with pytest.raises(ValueError):
        tiny_runtime.gateway.register_dev_route("/v1/sneaky", simulator)
