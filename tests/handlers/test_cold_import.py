"""The API handler's cold start loads no use case (benchmarks/cold_imports.py has the timings): the use cases,
their domain modules and the OpenAPI document load on the first request that needs them. Checked structurally in a
fresh interpreter (which modules ran), not with a timed assert."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.handlers.conftest import ROOT

PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("api_handler", {path!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
event = json.load(open({event!r}))
class Ctx:
    function_name = "f"; memory_limit_in_mb = 512; aws_request_id = "r"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    def get_remaining_time_in_millis(self): return 1000
assert module.lambda_handler(event, Ctx())["statusCode"] == 200
import types
# A module registered lazily is a _LazyModule until its first attribute access runs it (type() does not).
loaded = [name for name, m in list(sys.modules.items()) if name.startswith("satflow.") and type(m) is types.ModuleType]
print(json.dumps(sorted(loaded)))
"""

HEAVY = ("satflow.app.risk", "satflow.app.webhooks", "satflow.app.audit", "satflow.app.payments",
         "satflow.app.transfers", "satflow.app.invoices", "satflow.app.sanctions", "satflow.domain.risk",
         "satflow.domain.audit", "satflow.domain.lightning", "satflow.api.openapi", "satflow.app.ports")


def test_import_and_health_load_no_use_case():
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", POWERTOOLS_SERVICE_NAME="t")
    out = subprocess.run([sys.executable, "-c", PROBE.format(path=str(ROOT / "functions/api/app.py"),
                                                             event=str(ROOT / "events/api/health.json"))],
                         check=True, capture_output=True, text=True, env=env)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
