"""The outside world behind ports: databases, gateways."""
