"""template.yaml <-> the WebSocket code: the API's routes and route selection, the stage that never logs requests,
the fan-out's stream filter (the webhook relay's), least-privilege grants scoped to this API, samples that parse
with Powertools' WebSocket models, and the local runtime reading the same routes."""
from __future__ import annotations

import json

import pytest

from .conftest import ROOT, TEMPLATE, function_statements, resources_of

EVENTS = ROOT / "events"
SAMPLES = sorted((EVENTS / "websocket").glob("*.json"))


def _websocket_api(template):
    apis = {lid: r for lid, r in resources_of(template, "AWS::ApiGatewayV2::Api").items()
            if r["Properties"].get("ProtocolType") == "WEBSOCKET"}
    assert list(apis) == ["WebSocketApi"]
    return apis["WebSocketApi"]["Properties"]


def test_websocket_api_routes_select_on_the_body_action_and_reach_the_websocket_function(template):
    assert _websocket_api(template)["RouteSelectionExpression"] == "$request.body.action"
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in
              resources_of(template, "AWS::ApiGatewayV2::Route").values()
              if r["Properties"]["ApiId"] == {"Ref": "WebSocketApi"}}
    assert set(routes) == {"$connect", "$disconnect", "subscribe"}
    assert {json.dumps(r["Target"]) for r in routes.values()} == {
        json.dumps({"Fn::Sub": "integrations/${WebSocketIntegration}"})}
    integration = template["Resources"]["WebSocketIntegration"]["Properties"]
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert "${WebSocketFunction.Arn}" in integration["IntegrationUri"]["Fn::Sub"]
    permission = template["Resources"]["WebSocketInvokePermission"]["Properties"]
    assert permission["FunctionName"] == {"Ref": "WebSocketFunction"}
    assert "${WebSocketApi}/*" in permission["SourceArn"]["Fn::Sub"]
    deployment = template["Resources"]["WebSocketDeployment"]
    assert set(deployment["DependsOn"]) == {"WebSocketConnectRoute", "WebSocketDisconnectRoute",
                                            "WebSocketSubscribeRoute"}


def test_the_stage_never_logs_request_data(template):
    """Full request logging would write the ?key= query string (an API key) to CloudWatch."""
    stage = template["Resources"]["WebSocketStage"]["Properties"]
    assert stage["DefaultRouteSettings"]["DataTraceEnabled"] is False
    assert "AccessLogSettings" not in stage or "querystring" not in json.dumps(stage["AccessLogSettings"]).lower()
    assert "RouteSettings" not in stage


def test_stage_name_matches_the_endpoint_the_functions_post_to(template, functions):
    stage = template["Resources"]["WebSocketStage"]["Properties"]["StageName"]
    for lid in ("WebSocketFunction", "WebSocketFanoutFunction"):
        endpoint = functions[lid]["Properties"]["Environment"]["Variables"]["SATFLOW_WEBSOCKET_ENDPOINT"]["Fn::Sub"]
        assert endpoint.startswith("https://${WebSocketApi}.execute-api.") and endpoint.endswith(f"/{stage}")


def test_fanout_reads_exactly_what_the_webhook_relay_reads(template, functions):
    from satflow_dev.runtime.stream_poller import passes_filters

    fanout = functions["WebSocketFanoutFunction"]["Properties"]["Events"]["Outbox"]
    relay = functions["WebhookRelayFunction"]["Properties"]["Events"]["Outbox"]
    assert fanout["Type"] == "DynamoDB"
    assert fanout["Properties"]["Stream"] == relay["Properties"]["Stream"]
    assert fanout["Properties"]["FilterCriteria"] == relay["Properties"]["FilterCriteria"]
    assert fanout["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    patterns = [json.loads(f["Pattern"]) for f in fanout["Properties"]["FilterCriteria"]["Filters"]]
    samples = json.loads((EVENTS / "websocket_fanout" / "outbox_inserts.json").read_text())["Records"]
    assert samples and all(passes_filters(patterns, r) for r in samples)


def test_websocket_functions_are_least_privilege_and_scoped_to_this_api(template, functions):
    table = {"Fn::GetAtt": ["LedgerTable", "Arn"]}
    manage = {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}"
                         "/live/*/@connections/*"}
    routes = function_statements(template, functions["WebSocketFunction"])
    assert [(s["Action"], s["Resource"]) for s in routes] == [
        (["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"],
         table),
        (["execute-api:ManageConnections"], manage)]
    fanout = function_statements(template, functions["WebSocketFanoutFunction"])  # its own role (a stream consumer)
    assert [(s["Action"], s["Resource"]) for s in fanout] == [
        (["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"], table),
        (["execute-api:ManageConnections"], manage),
        (["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
         {"Fn::Sub": "${LedgerTable.Arn}/stream/*"}),
        (["sqs:SendMessage"], {"Fn::GetAtt": ["StreamFailuresQueue", "Arn"]}),
        (["logs:CreateLogStream", "logs:PutLogEvents"], {"Fn::GetAtt": ["WebSocketFanoutFunctionLogGroup", "Arn"]}),
        (["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "*")]
    # Neither may read the admin key: the connect path refuses non-account keys before any lookup.
    for lid in ("WebSocketFunction", "WebSocketFanoutFunction"):
        assert not any(a.startswith("secretsmanager:") for s in function_statements(template, functions[lid])
                       for a in s["Action"])


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_websocket_samples_parse_with_the_powertools_models_and_name_a_declared_route(path, template):
    from aws_lambda_powertools.utilities.parser import models

    raw = json.loads(path.read_text())
    route = raw["requestContext"]["routeKey"]
    model = {"$connect": models.APIGatewayWebSocketConnectEventModel,
             "$disconnect": models.APIGatewayWebSocketDisconnectEventModel}.get(
        route, models.APIGatewayWebSocketMessageEventModel)
    model(**raw)
    declared = {r["Properties"]["RouteKey"] for r in resources_of(template, "AWS::ApiGatewayV2::Route").values()}
    assert route in declared
    if route not in ("$connect", "$disconnect"):
        from satflow.domain.realtime import parse_subscribe

        assert json.loads(raw["body"])["action"] == route
        parse_subscribe(raw["body"])


def test_the_local_runtime_serves_the_same_routes():
    from satflow_dev.runtime.template import load_template
    from satflow_dev.runtime.websocket_gateway import websocket_api

    api = websocket_api(load_template(TEMPLATE))
    assert api is not None and api.stage == "live" and api.route_selection == "$request.body.action"
    assert {k: f.logical_id for k, f in api.routes.items()} == {
        "$connect": "WebSocketFunction", "$disconnect": "WebSocketFunction", "subscribe": "WebSocketFunction"}
