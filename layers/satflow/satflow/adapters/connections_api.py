"""The API Gateway ``@connections`` management API (``apigatewaymanagementapi``): send a message to one WebSocket
connection, or close it.

Endpoint: the deployed stack gives ``SATFLOW_WEBSOCKET_ENDPOINT`` (https://<api-id>.execute-api.<region>.
amazonaws.com/<stage>); in development ``AWS_ENDPOINT_URL`` wins, and the local runtime serves
``/@connections/{id}`` on that endpoint with the same semantics (410 for a connection that is gone).
"""
from __future__ import annotations

from typing import Any, Callable

from satflow.domain import errors
from satflow.domain.realtime import ConnectionGone

# Codes the service answers for a connection that no longer exists (410; 403 for an id it never issued).
_GONE_CODES = frozenset({"GoneException", "410"})
_TRANSIENT_CODES = frozenset({"LimitExceededException", "TooManyRequestsException", "ThrottlingException",
                              "InternalServerErrorException", "ServiceUnavailableException", "429", "500", "502",
                              "503", "504"})


__all__ = ["ConnectionGone", "ConnectionsApi", "management_client_factory"]


class ConnectionsApi:
    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client  # built on first use

    def post(self, connection_id: str, data: bytes) -> None:
        """Sends one message. Raises ConnectionGone (410), TransientError (throttled, 5xx, transport)."""
        self._request("post_to_connection", ConnectionId=connection_id, Data=data)

    def close(self, connection_id: str) -> None:
        """Closes the connection; a connection already gone is fine."""
        try:
            self._request("delete_connection", ConnectionId=connection_id)
        except ConnectionGone:
            pass

    def _request(self, operation: str, **kwargs: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            getattr(self._client(), operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _GONE_CODES or status == "410":
                raise ConnectionGone(kwargs.get("ConnectionId", "")) from exc
            if code in _TRANSIENT_CODES or status in _TRANSIENT_CODES:
                raise errors.TransientError(f"@connections {operation}: {code or status}") from exc
            raise
        except BotoCoreError as exc:
            raise errors.TransientError(f"@connections unreachable: {type(exc).__name__}") from exc


def management_client_factory(region: str, endpoint_url: str | None, websocket_endpoint: str | None
                              ) -> Callable[[], Any]:
    """A once-built boto3 client for the management API."""
    built: list[Any] = []

    def build() -> Any:
        if not built:
            import boto3
            from botocore.config import Config

            endpoint = endpoint_url or websocket_endpoint
            if not endpoint:
                raise RuntimeError("set SATFLOW_WEBSOCKET_ENDPOINT (the WebSocket API's stage URL)")
            built.append(boto3.client("apigatewaymanagementapi", region_name=region, endpoint_url=endpoint,
                                      config=Config(connect_timeout=2, read_timeout=5,
                                                    retries={"max_attempts": 2, "mode": "standard"})))
        return built[0]

    return build
