"""Key management: master keys (local files or AWS KMS) and envelope encryption."""
