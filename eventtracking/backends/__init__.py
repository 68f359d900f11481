"""Backends: where events are delivered."""
