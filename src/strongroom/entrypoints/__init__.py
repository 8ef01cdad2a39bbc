"""Ways in: the HTTP API, the worker and the CLI."""
