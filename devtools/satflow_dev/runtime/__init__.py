"""The local runtime (`make run`): template.yaml wired on moto, in one process, without AWS or Docker.

moto_server (locked moto on a port) -> template (the typed model of template.yaml) -> resources (tables, secrets,
queues, state machines in moto) -> invoker (handlers in-process) -> http_gateway (API Gateway v2 events) ->
services (extension point: lightning_server, sqs_poller, schedules are the default ones) -> local_runtime (wires
them) -> __main__ (CLI).
Nothing is imported here, so `satflow_dev.runtime.moto_server` stays cheap to import for tests.
"""
