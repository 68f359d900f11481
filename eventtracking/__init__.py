"""Emit semi-structured events, enrich them with context and deliver them to backends."""

__version__ = "5.0.0"
