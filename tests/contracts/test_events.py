"""events/ <-> template.yaml: every sample event belongs to a function, parses with its handler's model, and
every declared HTTP route has a sample."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import ROOT, http_routes

EVENTS = ROOT / "events"
API_EVENTS = sorted((EVENTS / "api").glob("*.json"))


def _code_dirs(functions) -> dict[str, str]:
    """functions/<dir>/ -> logical id."""
    out = {}
    for lid, fn in functions.items():
        code_uri = Path(fn["Properties"]["CodeUri"])
        if code_uri.parts[:1] == ("functions",) and len(code_uri.parts) == 2:
            out[code_uri.parts[1]] = lid
    return out


def _route_regex(route_key: str) -> re.Pattern[str]:
    """"GET /v1/payments/{id}" -> a regex matching the concrete path ({proxy+} matches several segments)."""
    _method, path = route_key.split(" ", 1)
    pattern = re.sub(r"\\\{[^}]+\\\+\\\}", ".+", re.escape(path))
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
    return re.compile(f"^{pattern}$")


def test_there_are_api_events():
    assert API_EVENTS, "events/api/ has no sample events"


def test_every_events_dir_belongs_to_a_function(functions):
    dirs = _code_dirs(functions)
    for d in sorted(p for p in EVENTS.iterdir() if p.is_dir()):
        assert d.name in dirs, f"events/{d.name}/ has no function with CodeUri functions/{d.name}/"


@pytest.mark.parametrize("path", API_EVENTS, ids=lambda p: p.name)
def test_api_event_parses_as_http_api_v2(path):
    from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model

    raw = json.loads(path.read_text())
    event = APIGatewayProxyEventV2Model(**raw)
    assert event.version == "2.0"
    assert event.isBase64Encoded is False
    assert event.routeKey == event.requestContext.routeKey
    method, _ = event.routeKey.split(" ", 1)
    assert event.requestContext.http.method == method
    assert event.requestContext.http.path == event.rawPath
    assert _route_regex(event.routeKey).match(event.rawPath), (event.routeKey, event.rawPath)
    # API Gateway v2 lower-cases header names; handlers look them up that way.
    assert all(h == h.lower() for h in raw["headers"]), sorted(raw["headers"])
    if event.body is not None:
        json.loads(event.body)
        assert raw["headers"].get("content-type") == "application/json"
    if event.queryStringParameters:
        assert event.rawQueryString == "&".join(f"{k}={v}" for k, v in event.queryStringParameters.items())


@pytest.mark.parametrize("path", API_EVENTS, ids=lambda p: p.name)
def test_api_event_route_is_declared(path, functions):
    routes = set(http_routes(functions[_code_dirs(functions)["api"]]))
    route_key = json.loads(path.read_text())["routeKey"]
    assert route_key in routes, f"{path.name}: {route_key} is not a route of the api function"


def test_every_http_route_has_a_sample_event(functions):
    dirs = {lid: d for d, lid in _code_dirs(functions).items()}
    for lid, fn in functions.items():
        routes = set(http_routes(fn))
        if not routes:
            continue
        assert lid in dirs, f"{lid} has HTTP routes but its CodeUri is not functions/<dir>/"
        samples = {json.loads(p.read_text()).get("routeKey") for p in (EVENTS / dirs[lid]).glob("*.json")}
        missing = sorted(routes - samples)
        assert not missing, f"no sample event in events/{dirs[lid]}/ for {missing}"


def test_authenticated_samples_carry_a_bearer_placeholder():
    for path in API_EVENTS:
        headers = json.loads(path.read_text())["headers"]
        assert headers.get("authorization", "").startswith("Bearer "), path.name


def test_money_samples_carry_an_idempotency_key():
    for path in API_EVENTS:
        raw = json.loads(path.read_text())
        if raw["routeKey"] in {"POST /v1/transfers", "POST /v1/admin/adjustments"}:
            assert raw["headers"].get("idempotency-key"), path.name
            body = json.loads(raw["body"])
            assert isinstance(body["amount_msat"], int) and not isinstance(body["amount_msat"], bool), path.name
