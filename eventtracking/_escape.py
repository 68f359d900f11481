"""Text from events and messages, made safe to print on an operator's terminal.

A stream name, a ``backend_name`` or a dead letter's reason can come from a message
that anyone able to write to the broker or the bus wrote. Printed raw, an escape
sequence in it would reach the operator's terminal (set its title, hide the lines
after it, move the cursor), and a newline would forge a line of the output. The
commands print such values through :func:`escape_for_terminal`.
"""

from __future__ import annotations

__all__ = ["escape_for_terminal"]

# Control characters, C1 controls and the line and paragraph separators (which some
# terminals and log viewers take for a new line); the backslash too, so that an escaped
# text cannot pass for another one.
_UNSAFE = {
    **{code: f"\\x{code:02x}" for code in range(0x20)},
    0x7F: "\\x7f",
    **{code: f"\\x{code:02x}" for code in range(0x80, 0xA0)},
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def escape_for_terminal(text: str) -> str:
    """``text`` with every control character written as a Python escape (``\\x1b``,
    ``\\n``), and backslashes doubled; printable text, including non-ASCII letters, is
    kept as it is. Never raises for a str."""
    return text.translate(_UNSAFE)
