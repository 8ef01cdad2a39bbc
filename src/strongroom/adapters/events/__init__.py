"""Event streams: in-process (embedded) and NATS JetStream."""
