"""Processors: callables that filter, change or replace events before delivery."""
