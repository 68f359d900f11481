"""The ENGINE/OPTIONS builder's former place, kept importable.

The builder needs no Django and lives in :mod:`eventtracking._engines`, the core
configuration, where workers without Django find it. The names here are the same
objects.
"""

from eventtracking._engines import (
    ANY,
    BACKEND,
    BAD_OPTIONS,
    CONSTRUCT,
    DEPENDENCY,
    ENGINE,
    EXAMPLE,
    IMPORT,
    MISSING,
    OPTIONS,
    PROCESSOR,
    ROLE,
    EngineError,
    build,
    check_options,
    check_role,
    import_engine,
    problems,
    setting_problems,
)

__all__ = [
    "ANY",
    "BACKEND",
    "BAD_OPTIONS",
    "CONSTRUCT",
    "DEPENDENCY",
    "ENGINE",
    "EXAMPLE",
    "IMPORT",
    "MISSING",
    "OPTIONS",
    "PROCESSOR",
    "ROLE",
    "EngineError",
    "build",
    "check_options",
    "check_role",
    "import_engine",
    "problems",
    "setting_problems",
]
