"""The local runtime (`make run`): template.yaml wired on moto (the table on DynamoDB Local by default), without AWS
or Docker; each function's execution environments are worker processes.

moto_server (locked moto on a port) -> template (the typed model of template.yaml) -> resources (tables, secrets,
queues, state machines in moto) -> workers (one process per warm environment, one invocation at a time; worker.py
is the process) or invoker (handlers in-process, for tests that script module state) -> http_gateway (API Gateway
v2 events) ->
services (extension point: lightning_server, sqs_poller, schedules are the default ones) -> local_runtime (wires
them) -> __main__ (CLI).
Nothing is imported here, so `satflow_dev.runtime.moto_server` stays cheap to import for tests.
"""
