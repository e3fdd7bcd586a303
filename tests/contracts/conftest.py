"""Shared fixtures for the contract tests: template.yaml as plain data, without AWS or the local runtime."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    from satflow_dev.runtime.template import load_template_document

    return load_template_document(path)


def resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {lid: res for lid, res in template.get("Resources", {}).items() if res.get("Type") == resource_type}


def function_property(template: dict[str, Any], fn: dict[str, Any], name: str, default: Any = None) -> Any:
    """A function property with SAM's Globals.Function fallback."""
    props = fn.get("Properties", {})
    if name in props:
        return props[name]
    return template.get("Globals", {}).get("Function", {}).get(name, default)


def function_env(template: dict[str, Any], fn: dict[str, Any]) -> dict[str, Any]:
    """Globals.Function.Environment.Variables merged with the function's own (the function wins)."""
    glob = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own = fn.get("Properties", {}).get("Environment", {}).get("Variables", {})
    return {**glob, **own}


def function_statements(template: dict[str, Any], fn: dict[str, Any]) -> list[dict[str, Any]]:
    """The IAM statements a function's code runs with: its inline ``Policies`` statements, or, for a function with
    its own ``Role: !GetAtt <X>Role.Arn`` (the event-source functions, see template.yaml), that role's inline
    policies. Conditional statements (``Fn::If``) are left out."""
    props = fn.get("Properties", {})
    role = props.get("Role")
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        role_id = role["Fn::GetAtt"][0] if isinstance(role["Fn::GetAtt"], list) else role["Fn::GetAtt"].split(".")[0]
        documents = [p["PolicyDocument"] for p in template["Resources"][role_id]["Properties"].get("Policies", [])]
    else:
        documents = [p for p in props.get("Policies", []) or [] if isinstance(p, dict) and "Statement" in p]
    out = []
    for doc in documents:
        statements = doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]
        out += [s for s in statements if "Fn::If" not in s]
    return out


def http_routes(fn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """routeKey ("GET /v1/health") -> the HttpApi event's properties."""
    routes: dict[str, dict[str, Any]] = {}
    for event in fn.get("Properties", {}).get("Events", {}).values():
        if event.get("Type") == "HttpApi":
            props = event.get("Properties", {})
            method = str(props.get("Method", "ANY")).upper()
            path = props.get("Path", "$default")
            routes["$default" if path == "$default" else f"{method} {path}"] = props
    return routes


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="session")
def functions(template) -> dict[str, dict[str, Any]]:
    return resources_of(template, "AWS::Serverless::Function")
