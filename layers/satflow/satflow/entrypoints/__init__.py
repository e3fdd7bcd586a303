"""Long-running processes that are not Lambda functions (each one a ``python -m`` entry point for a container or
host). They reuse the package's use cases and the composition root like the handlers do."""
