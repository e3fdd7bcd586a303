"""Cold import time of each Lambda handler module against the baseline `import boto3; boto3.client("dynamodb")`,
measured in fresh interpreters in the same run (medians of N). Printed figures, not a pass/fail test.

Usage: python benchmarks/cold_imports.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

BASELINE = """
import time; t = time.perf_counter()
import boto3; boto3.client("dynamodb", region_name="us-east-1")
print(time.perf_counter() - t)
"""

HANDLER = """
import importlib.util, sys, time
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("handler_under_test", {path!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
print(time.perf_counter() - t)
"""

# Import plus the first request (health: no AWS call), so the figure is not flattered by lazy imports alone.
FIRST_CALL = """
import importlib.util, json, time
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("handler_under_test", {path!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
event = json.load(open({event!r}))
class Ctx:
    function_name = "f"; memory_limit_in_mb = 512; aws_request_id = "r"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    def get_remaining_time_in_millis(self): return 1000
assert module.lambda_handler(event, Ctx())["statusCode"] == 200
print(time.perf_counter() - t)
"""


def measure(code: str, repeat: int) -> float:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1",
               PYTHONDONTWRITEBYTECODE="1", POWERTOOLS_SERVICE_NAME="bench", SATFLOW_ADMIN_KEY="bench")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)  # warm the .pyc cache
    samples = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
        samples.append(float(out.stdout.strip().splitlines()[-1]) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    baseline = measure(BASELINE, args.repeat)
    rows = [("baseline: import boto3 + dynamodb client", baseline)]
    for path in sorted(ROOT.glob("functions/*/app.py")):
        rows.append((f"import functions/{path.parent.name}/app.py", measure(HANDLER.format(path=str(path)), args.repeat)))
    health = ROOT / "events" / "api" / "health.json"
    if health.exists():
        rows.append(("import + first GET /v1/health (api)",
                     measure(FIRST_CALL.format(path=str(ROOT / "functions/api/app.py"), event=str(health)), args.repeat)))
    print(f"{'what':<48} {'median ms':>10} {'x baseline':>11}")
    for name, ms in rows:
        print(f"{name:<48} {ms:>10.1f} {ms / baseline:>11.2f}")
    heaviest = max(ms for name, ms in rows[1:] if name.startswith("import functions"))
    print(json.dumps({"baseline_ms": round(baseline, 1), "heaviest_handler_ms": round(heaviest, 1),
                      "target_met": heaviest <= baseline}))


if __name__ == "__main__":
    main()
