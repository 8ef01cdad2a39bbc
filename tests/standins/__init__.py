"""Stand-ins: real local HTTP servers speaking the subset of a remote API our adapters use."""
