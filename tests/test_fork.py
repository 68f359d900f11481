"""The fork helpers every fork-aware object uses: at-fork hooks held weakly, and the
pid check."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable

import pytest

from eventtracking._util.fork import ForkCheck, after_fork_in_child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(check: Callable[[], bool]) -> bool:
    """Fork, run ``check`` in the child, and return what it returned there."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.write(write, b"1" if check() else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        answer = os.read(read, 1)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return answer == b"1"


class Resettable:
    def __init__(self) -> None:
        self.resets = 0
        after_fork_in_child(self.reset)

    def reset(self) -> None:
        self.resets += 1


def test_a_registered_method_runs_in_the_child_only() -> None:
    """The method runs once in the child after a fork, and never in the parent."""
    thing = Resettable()
    assert in_child(lambda: thing.resets == 1)
    assert thing.resets == 0


def test_registering_does_not_keep_the_object_alive() -> None:
    """The hook holds its object weakly: a dropped object is collected, and a fork after
    that does not fail."""
    thing = Resettable()
    ref = weakref.ref(thing)
    del thing
    gc.collect()
    assert ref() is None
    survivor = Resettable()
    assert in_child(lambda: survivor.resets == 1)


def test_fork_check_tells_the_child_from_the_parent() -> None:
    """A ForkCheck made in the parent says forked() in the child only; one made in the
    child does not."""
    check = ForkCheck()
    assert not check.forked()
    assert check.pid == os.getpid()
    assert in_child(lambda: check.forked() and not ForkCheck().forked())
    assert not check.forked()


def test_only_bound_methods_are_taken() -> None:
    """A plain function has no object to hold weakly: it is refused with a TypeError that
    says what is needed."""
    with pytest.raises(TypeError, match="needs a bound method"):
        after_fork_in_child(print)
