"""Handler tests: the real API handler on moto, driven by API Gateway HTTP API v2 events built from events/api."""
from __future__ import annotations

import base64
import copy
import importlib.util
import json
import pathlib
import sys

import pytest

from satflow import bootstrap

from tests.conftest import ADMIN_KEY, build_services, simulated_lnd

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_handler_module(function_dir: str, name: str):
    """Import functions/<dir>/app.py under a unique name (every function's module is called app)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function_dir / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    function_name = "ApiFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


def sample_events() -> dict[str, dict]:
    """routeKey -> sample event from events/api."""
    out = {}
    for path in sorted((ROOT / "events" / "api").glob("*.json")):
        event = json.loads(path.read_text())
        out.setdefault(event["routeKey"], event)
    return out


class Api:
    def __init__(self, handler):
        self._handler = handler
        self._samples = sample_events()

    def call(self, method: str, path: str, *, key: str | None = None, body=None, raw_body: str | None = None,
             headers: dict | None = None, query: dict | None = None, route: str | None = None):
        route_key = route or f"{method} {path}"
        event = copy.deepcopy(self._samples[route_key])
        event["rawPath"] = path
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        hdrs = {k: v for k, v in event.get("headers", {}).items() if k not in ("authorization", "idempotency-key")}
        if key is not None:
            hdrs["authorization"] = f"Bearer {key}"
        hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
        event["headers"] = hdrs
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in (query or {}).items())
        if raw_body is not None:
            event["body"], event["isBase64Encoded"] = raw_body, False
        elif body is not None:
            event["body"] = base64.b64encode(json.dumps(body).encode()).decode()
            event["isBase64Encoded"] = True
        else:
            event.pop("body", None)
            event["isBase64Encoded"] = False
        resp = self._handler(event, LambdaContext())
        return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


@pytest.fixture
def sim():
    from satflow_dev.simulators.lightning import LightningSimulator

    return LightningSimulator()


@pytest.fixture
def started():
    """Payment workflows the API asked to start (the state machine itself runs in tests/flows)."""
    return []


@pytest.fixture
def api(ddb, sim, started):
    svc = build_services(ddb)
    svc.lnd = simulated_lnd(sim)
    svc.start_payment = started.append
    bootstrap.override(svc)
    module = load_handler_module("api", "satflow_fn_api")
    yield Api(module.lambda_handler)
    bootstrap.override(None)


@pytest.fixture
def admin():
    return ADMIN_KEY
