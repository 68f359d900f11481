"""Small helpers that every layer of the package shares; none of them knows an event path.

Each module's docstring says what it holds; ``docs/design.rst`` says where each serves.
They import only the standard library, :mod:`eventtracking.exceptions` and each other.
"""
