"""Real components for the test suite and the local runtime: btcd + two lnd nodes on regtest, DynamoDB Local.

Nothing here ships: the binaries are built from the registries (Go module proxy, Maven Central) into
``.build/`` by :mod:`satflow_dev.regtest.toolchain`, and the processes run on loopback with per-run ports and
temporary directories. Entry point: ``python -m satflow_dev.regtest {build,up,dynamodb}``.
"""
