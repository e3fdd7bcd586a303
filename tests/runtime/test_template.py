"""template.yaml -> the runtime's model: resources, functions, routes and resolved environments."""
from __future__ import annotations

import pytest

from satflow_dev.runtime.template import NO_VALUE, Resolver, TemplateError, load_template

from .conftest import REAL_TEMPLATE


@pytest.fixture(scope="module")
def real_model():
    return load_template(REAL_TEMPLATE)


def test_real_template_api_function_routes_and_env(real_model):
    api = real_model.function("ApiFunction")
    assert api.code_dir == REAL_TEMPLATE.parent / "functions" / "api"
    assert (api.handler_module, api.handler_attr) == ("app", "lambda_handler")
    assert api.handler_file == REAL_TEMPLATE.parent / "functions" / "api" / "app.py"
    assert ("GET", "/v1/health") in {(r.method, r.path) for r in api.routes}
    assert "POST /v1/transfers" in {r.route_key for r in api.routes}
    table = next(t for t in real_model.tables if t.logical_id == "LedgerTable")
    secret = next(s for s in real_model.secrets if s.logical_id == "AdminKeySecret")
    # Globals.Function.Environment with every !Ref resolved to the local names.
    assert api.env["SATFLOW_TABLE"] == table.name == "satflow-local-LedgerTable"
    assert api.env["SATFLOW_ADMIN_KEY_SECRET_ID"] == secret.name
    assert api.env["SATFLOW_NETWORK"] == real_model.parameters["Network"] == "regtest"
    assert api.env["SATFLOW_SYSTEM_SHARDS"] == real_model.parameters["SystemShards"] == "8"
    assert all(isinstance(v, str) for v in api.env.values())


def test_real_template_table_keeps_keys_stream_and_ttl(real_model):
    table = next(t for t in real_model.tables if t.logical_id == "LedgerTable")
    assert [k["AttributeName"] for k in table.key_schema] == ["pk", "sk"]
    assert table.ttl_attribute == "ttl"
    assert table.stream_view_type is not None


def test_real_template_resources_not_created_locally_are_listed(real_model):
    ignored_types = {rtype for _, rtype in real_model.ignored}
    assert "AWS::Serverless::LayerVersion" in ignored_types


def test_parameter_overrides_are_validated():
    model = load_template(REAL_TEMPLATE, {"Network": "signet", "SystemShards": "4"})
    assert model.function("ApiFunction").env["SATFLOW_NETWORK"] == "signet"
    assert model.function("ApiFunction").env["SATFLOW_SYSTEM_SHARDS"] == "4"
    with pytest.raises(TemplateError, match="not one of"):
        load_template(REAL_TEMPLATE, {"Network": "litecoin"})
    with pytest.raises(TemplateError, match="unknown parameter"):
        load_template(REAL_TEMPLATE, {"Nope": "1"})


def test_tiny_template_resolves_intrinsics_events_and_state_machines(tiny_template):
    model = load_template(tiny_template, {"Mode": "slow"})
    fn = model.function("EchoFunction")
    assert fn.env["TABLE"] == "satflow-local-tiny-t1"
    assert fn.env["QUEUE_URL"].endswith("/123456789012/tiny-t1")
    assert fn.env["MODE"] == "careful"  # Fn::If on a condition over a parameter override
    assert fn.env["SUBBED"] == "satflow-local-t1-arn:aws:dynamodb:us-east-1:123456789012:table/satflow-local-tiny-t1"
    assert fn.env["SATFLOW_ADMIN_KEY_SECRET_ID"] == "tiny-admin-t1"  # the function's own variable merged in
    assert (fn.timeout_s, fn.memory_mb) == (5, 256)  # Globals.Function.Timeout, own MemorySize
    assert [r.route_key for r in fn.routes] == [
        "GET /items/{item_id}", "GET /items/special", "POST /items", "ANY /proxy/{rest+}"]
    (sqs,) = fn.sqs_events
    assert (sqs.queue_logical_id, sqs.queue_arn, sqs.batch_size, sqs.report_batch_item_failures) == (
        "Queue", "arn:aws:sqs:us-east-1:123456789012:tiny-t1", 5, True)
    (tick,) = fn.schedules
    assert (tick.expression, tick.input) == ("rate(1 minute)", '{"tick": true}')
    (flow,) = model.state_machines
    assert flow.definition_path == tiny_template.parent / "statemachines" / "flow.asl.json"
    assert flow.substitutions == {"EchoArn": fn.arn}
    (queue,) = model.queues
    assert queue.attributes == {"VisibilityTimeout": "30"}
    assert ("Topic", "AWS::SNS::Topic") in model.ignored


def test_resolver_functions():
    raw = {"Mappings": {"Net": {"regtest": {"Hrp": "bcrt"}}},
           "Resources": {"Fn": {"Type": "AWS::Serverless::Function", "Properties": {"FunctionName": "named"}}}}
    r = Resolver(raw, {"Network": "regtest"})
    assert r.resolve({"Fn::Join": ["-", ["a", {"Ref": "Network"}]]}) == "a-regtest"
    assert r.resolve({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}) == "y"
    assert r.resolve({"Fn::FindInMap": ["Net", {"Ref": "Network"}, "Hrp"]}) == "bcrt"
    assert r.resolve({"Fn::Sub": "${!Literal}-${AWS::Region}"}) == "${Literal}-us-east-1"
    assert r.resolve({"Fn::Sub": ["${X}/${Fn}", {"X": "x"}]}) == "x/named"
    assert r.resolve({"Fn::GetAtt": ["Fn", "Arn"]}) == "arn:aws:lambda:us-east-1:123456789012:function:named"
    assert r.resolve({"a": {"Ref": "AWS::NoValue"}, "b": 1}) == {"b": 1}
    assert r.ref("AWS::NoValue") is NO_VALUE
    with pytest.raises(TemplateError):
        r.resolve({"Fn::ImportValue": "x"})
