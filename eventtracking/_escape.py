"""Values chosen by a message's sender, made safe to write into a log line or a reason.

A ``backend_name`` or a leaf path comes from whoever can write to the broker. Written
raw, a newline in it forges a log line, an escape sequence drives the operator's
terminal, and a megabyte of it fills the log. :func:`escape` keeps such a value
readable (printable text is left alone, accents included) while showing every control,
format or separator character and every lone surrogate as a Python escape, and cuts it
to ``limit`` characters.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LIMIT", "escape"]

#: Characters of the value kept by :func:`escape` before it is cut.
DEFAULT_LIMIT = 200


def escape(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as one printable line of at most about ``limit`` characters.

    A string is returned as it is when every character is printable (``str.isprintable``:
    no control, format, separator or unassigned character) and it fits; otherwise each
    such character becomes its ``repr`` escape (``\\n``, ``\\x1b``, ``\\u2028``,
    ``\\udcff``) and a backslash is doubled, so that the result cannot be mistaken for
    an escape. Anything else is shown by its ``repr``, escaped the same way. A value
    longer than ``limit`` is cut, and ``...(N chars)`` says how long it was. Never
    raises: a ``repr`` that fails shows the type's name.
    """
    if not isinstance(value, str):
        try:
            value = repr(value)
        except Exception:
            value = f"<{type(value).__name__} with a failing repr>"
    total = len(value)
    text = value[:limit] if total > limit else value
    if not text.isprintable() or "\\" in text:
        text = "".join(_char(char) for char in text)
    if total > limit:
        text = f"{text}...({total} chars)"
    return text


def _char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    return repr(char)[1:-1]
