"""Values chosen by a message's sender, made safe to write into a log line or a terminal.

A ``backend_name``, a leaf path, a stream name or a dead letter's reason can come from
whoever can write to the broker or the bus. Written raw, a newline in it forges a log
line or a line of a command's output, an escape sequence drives the operator's terminal
(sets its title, hides the lines after it, moves the cursor), and a megabyte of it fills
the log. :func:`escape` keeps such a value readable (printable text is left alone,
accents included) while showing every control, format or separator character and every
lone surrogate as a Python escape; the worker's log lines also cut it to ``limit``
characters. The spool commands print through :func:`escape_for_terminal`, which cuts
nothing: an operator reading a dead letter wants all of it.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LIMIT", "escape", "escape_for_terminal", "safe_repr"]

#: Characters of the value kept by :func:`escape` before it is cut.
DEFAULT_LIMIT = 200


def escape(value: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """``value`` as one printable line of at most about ``limit`` characters.

    A string is returned as it is when every character is printable (``str.isprintable``:
    no control, format, separator or unassigned character) and it fits; otherwise each
    such character becomes its ``repr`` escape (``\\n``, ``\\x1b``, ``\\u2028``,
    ``\\udcff``) and a backslash is doubled, so that the result cannot be mistaken for
    an escape. Anything else is shown by its ``repr``, escaped the same way. A value
    longer than ``limit`` (None: no limit) is cut, and ``...(N chars)`` says how long it
    was. Never raises: a ``repr`` that fails shows the type's name.
    """
    if not isinstance(value, str):
        try:
            value = repr(value)
        except Exception:
            value = f"<{type(value).__name__} with a failing repr>"
    total = len(value)
    cut = limit is not None and total > limit
    text = value[:limit] if cut else value
    if not text.isprintable() or "\\" in text:
        text = "".join(_char(char) for char in text)
    if cut:
        text = f"{text}...({total} chars)"
    return text


def escape_for_terminal(text: str) -> str:
    """``text`` escaped as :func:`escape` does, whole (nothing is cut)."""
    return escape(text, limit=None)


def safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder naming its type when ``repr`` itself fails."""
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


def _char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    return repr(char)[1:-1]
