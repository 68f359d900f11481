"""eventtracking._util.escape: sender-chosen values written into log lines and reasons."""

from __future__ import annotations

import pytest

from eventtracking._util.escape import DEFAULT_LIMIT, escape


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("async", "async"),
        ("café/événement", "café/événement"),
        ("a\nINFO forged line", "a\\nINFO forged line"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone\udcffsurrogate", "lone\\udcffsurrogate"),
        ("back\\slash", "back\\\\slash"),
        (42, "42"),
        (("a", "b\n"), "('a', 'b\\\\n')"),
    ],
)
def test_printable_text_is_kept_and_everything_else_is_escaped(
    value: object, expected: str
) -> None:
    """Readable text passes; control, separator and surrogate characters are escaped."""
    assert escape(value) == expected


def test_the_result_is_always_one_printable_line() -> None:
    """Whatever the input, no character of the result is a control or separator."""
    hostile = "".join(chr(code) for code in range(0, 0x3000, 7)) + "\udc80\ud800"
    result = escape(hostile, limit=10_000)
    assert result.isprintable()
    assert "\n" not in result
    assert "\r" not in result


def test_a_long_value_is_cut_and_says_how_long_it_was() -> None:
    """Only ``limit`` characters are kept, followed by the original length."""
    result = escape("x" * 10_000)
    assert result == "x" * DEFAULT_LIMIT + "...(10000 chars)"
    assert escape("abcdef", limit=3) == "abc...(6 chars)"


def test_a_failing_repr_never_raises() -> None:
    """An object whose repr raises is named by its type."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError

    assert escape(Broken()) == "<Broken with a failing repr>"
