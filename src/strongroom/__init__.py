"""Strongroom: a self-hosted, secure-by-design payments backend."""

__version__ = "0.1.0"
