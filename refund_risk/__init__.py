"""Refund risk service: shared kernel (settings, errors, command line)."""

__version__ = "0.1.0"
