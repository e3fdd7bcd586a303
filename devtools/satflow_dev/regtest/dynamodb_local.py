"""DynamoDB Local (Maven Central build in .build/dynamodb-local) on a free loopback port, in memory.

::

    with DynamoDBLocal() as ddb:
        client = boto3.client("dynamodb", endpoint_url=ddb.endpoint_url, region_name="us-east-1", ...)

``-sharedDb``: one database whatever the credentials and region (tests and the local runtime use fake ones);
``-disableTelemetry``: no outbound calls. DynamoDB Local has no bind-address option: it listens on all
interfaces, on a port chosen per run.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .processes import LOOPBACK, ManagedProcess, NotReady, free_port
from .toolchain import DYNAMODB_LIB, DYNAMODB_MAIN, dynamodb_local_built


class DynamoDBLocal:
    def __init__(self, log_dir: Path | None = None) -> None:
        if not dynamodb_local_built():
            raise RuntimeError("DynamoDB Local is not fetched: run `python -m satflow_dev.regtest build`")
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("DynamoDB Local needs java (17+) on PATH")
        self.port = free_port()
        self._own_dir = log_dir is None
        self.dir = log_dir or Path(tempfile.mkdtemp(prefix="satflow-dynamodb-local-"))
        self.process = ManagedProcess(
            "dynamodb-local",
            [java, f"-Djava.library.path={DYNAMODB_LIB}", "-Xmx512m", "-cp", f"{DYNAMODB_LIB}/*", DYNAMODB_MAIN,
             "-inMemory", "-sharedDb", "-disableTelemetry", "-port", str(self.port)],
            self.dir / "dynamodb-local.log",
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, **kwargs: Any) -> Any:
        import boto3

        return boto3.client("dynamodb", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local", **kwargs)

    def start(self, timeout_s: float = 90.0) -> "DynamoDBLocal":
        self.process.start()
        probe_client = self.client()

        def probe() -> bool:
            try:
                probe_client.list_tables(Limit=1)
            except Exception as exc:  # botocore EndpointConnectionError while the JVM starts
                raise NotReady(str(exc)) from exc
            return True

        self.process.wait_ready(probe, timeout_s=timeout_s, what="ListTables answering", interval_s=0.3)
        return self

    def stop(self, keep_logs: bool = False) -> None:
        self.process.stop()
        if self._own_dir and not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "DynamoDBLocal":
        try:
            return self.start()
        except BaseException:
            self.stop(keep_logs=True)
            raise

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.stop(keep_logs=exc_type is not None)
