"""The WebSocket API's routes ($connect, $disconnect, subscribe), selected by ``requestContext.routeKey``.

$connect answers 200 to accept (echoing ``Sec-WebSocket-Protocol: satflow.v1`` when the client offered it) or
401/403/400 to refuse. The event is never logged: its query string or headers carry the API key
(``log_event=False`` explicitly, so POWERTOOLS_LOGGER_LOG_EVENT cannot turn it on); only the route, the
connection id and the outcome are.
"""
from __future__ import annotations

from aws_lambda_powertools import Logger

from satflow import bootstrap
from satflow.app import realtime
from satflow.domain import errors

logger = Logger(service="satflow")

_STATUS = {errors.Unauthorized: 401, errors.Forbidden: 403, errors.ValidationError: 400}


def _status(exc: errors.SatflowError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)


def _on_connect(event: dict, connection_id: str) -> dict:
    try:
        connected = realtime.connect(bootstrap.services(), connection_id, event.get("headers"),
                                     event.get("queryStringParameters"))
    except (errors.Unauthorized, errors.Forbidden, errors.ValidationError) as exc:
        logger.info("websocket connect refused", extra={"connection_id": connection_id, "code": exc.code})
        return {"statusCode": _status(exc), "body": exc.message}
    logger.info("websocket connected", extra={"connection_id": connection_id, "account_id": connected.account_id})
    response: dict = {"statusCode": 200}
    if connected.subprotocol:
        response["headers"] = {"Sec-WebSocket-Protocol": connected.subprotocol}
    return response


def _on_subscribe(event: dict, connection_id: str) -> dict:
    try:
        result = realtime.subscribe(bootstrap.services(), connection_id, event.get("body"))
    except errors.ValidationError:  # the client got an "error" message
        return {"statusCode": 400}
    logger.info("websocket subscribed", extra={"connection_id": connection_id, "topic": result.topic,
                                               "replay": result.replay, "replayed": result.replayed})
    return {"statusCode": 200}


@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event, context):
    context_ = event.get("requestContext") or {}
    route, connection_id = context_.get("routeKey"), context_.get("connectionId") or ""
    if route == "$connect":
        return _on_connect(event, connection_id)
    if route == "$disconnect":
        removed = realtime.disconnect(bootstrap.services(), connection_id)
        logger.info("websocket disconnected", extra={"connection_id": connection_id, "known": removed})
        return {"statusCode": 200}
    if route == "subscribe":
        return _on_subscribe(event, connection_id)
    logger.warning("unexpected websocket route", extra={"route": route})
    return {"statusCode": 400}
