"""The webhook delivery queue on SQS: one message per (subscription, event), and per-message retry delays."""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from satflow.domain import errors

MAX_VISIBILITY_S = 43_200  # SQS's ceiling (12 h)
_BATCH = 10


class SqsWebhookQueue:
    def __init__(self, client: Callable[[], Any], queue_url: Callable[[], str | None]) -> None:
        self._client = client  # built on first use
        self._queue_url = queue_url

    def url(self) -> str:
        url = self._queue_url()
        if not url:
            raise RuntimeError("set SATFLOW_WEBHOOK_QUEUE_URL")
        return url

    def send(self, messages: Sequence[dict]) -> None:
        """SendMessageBatch in tens; any entry SQS refused raises TransientError (the caller retries all:
        duplicates are harmless, deliveries are deduplicated by their records)."""
        url = self.url()
        for start in range(0, len(messages), _BATCH):
            chunk = messages[start:start + _BATCH]
            entries = [{"Id": str(i), "MessageBody": json.dumps(m, sort_keys=True, separators=(",", ":"))}
                       for i, m in enumerate(chunk)]
            response = self._call("send_message_batch", QueueUrl=url, Entries=entries)
            failed = response.get("Failed") or []
            if failed:
                raise errors.TransientError(f"SQS refused {len(failed)} webhook message(s): {failed[0].get('Code')}")

    def delay(self, receipt_handle: str, seconds: int) -> None:
        """The message comes back after ``seconds`` (the retry backoff), instead of the queue's visibility timeout."""
        self._call("change_message_visibility", QueueUrl=self.url(), ReceiptHandle=receipt_handle,
                   VisibilityTimeout=max(0, min(int(seconds), MAX_VISIBILITY_S)))

    def _call(self, operation: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(), operation)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise errors.TransientError(f"SQS {operation} failed: {type(exc).__name__}") from exc
