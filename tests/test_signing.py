"""eventtracking.backends.celery._wire: the signatures of Celery messages, without a broker.

The worker's refusal of unsigned and badly signed messages, through a real broker and
worker, is in test_async_routing.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from eventtracking.backends.celery import _wire

KEY = _wire.normalise_keys(["k" * 32])
OTHER = _wire.normalise_keys([b"o" * 32])


def test_a_signature_covers_the_backend_name_and_every_entry() -> None:
    """Changing the name, an entry, the order, or where one entry ends and the next
    begins changes the signature; the same message signs the same."""
    signature = _wire.sign(KEY, "xapi", ["ab", "c"])
    assert signature == _wire.sign(KEY, "xapi", ["ab", "c"])
    for name, entries in [
        ("xap", ["iab", "c"]),
        ("xapi", ["a", "bc"]),
        ("xapi", ["c", "ab"]),
        ("xapi", ["ab", "c", ""]),
        ("xapi", ["ab", "d"]),
    ]:
        assert _wire.sign(KEY, name, entries) != signature, (name, entries)
    assert _wire.sign(OTHER, "xapi", ["ab", "c"]) != signature


def test_any_listed_key_verifies_and_a_message_without_keys_passes() -> None:
    """Every key verifies (rotation); no keys means nothing is checked."""
    keys = (*OTHER, *KEY)
    signed_with_old = _wire.sign(KEY, "n", ["e"])
    assert _wire._problem(keys, "n", ["e"], signed_with_old) is None
    assert _wire._problem(OTHER, "n", ["e"], signed_with_old) == "bad_signature"
    assert _wire._problem(keys, "n", ["e"], None) == "unsigned"
    assert _wire._problem(keys, "n", ["e"], "") == "unsigned"
    assert _wire._problem(keys, "n", None, signed_with_old) == "bad_signature"
    assert _wire._problem((), "n", ["e"], None) is None


def test_a_lone_surrogate_in_an_entry_signs_without_raising() -> None:
    """Entries come from the broker: whatever text they hold can be signed and checked."""
    signature = _wire.sign(KEY, "n", ["\ud800"])
    assert _wire._problem(KEY, "n", ["\ud800"], signature) is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("a-single-key-not-in-a-list", "must be a list of keys"),
        (b"a-single-key-not-in-a-list", "must be a list of keys"),
        (42, "must be a list of keys"),
        (
            ["short"],
            r"signing_keys\[0\] must be a str or bytes of at least 16 bytes, got a str of 5",
        ),
        (["k" * 16, 1234], r"signing_keys\[1\] .* got a int of no bytes"),
    ],
)
def test_bad_keys_are_refused_without_showing_them(keys: Any, message: str) -> None:
    """A key list that is not one, or a key too short to be secret, is a ValueError
    that names its position and length, never the key itself."""
    with pytest.raises(ValueError, match=message) as raised:
        _wire.normalise_keys(keys)
    assert "short" not in str(raised.value).replace("shorter", "")


def test_no_keys_is_an_empty_tuple() -> None:
    """None (the default) turns signing off."""
    assert _wire.normalise_keys(None) == ()
    assert _wire.normalise_keys([]) == ()
