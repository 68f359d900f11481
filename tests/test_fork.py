"""The fork helpers every fork-aware object uses: at-fork hooks held weakly, and the
pid check each such object makes inline."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from eventtracking._util import fork
from eventtracking._util.fork import after_fork_in_child
from eventtracking.delivery import BatchDelivery

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


class FileSink:
    """Appends each item as a line of ``path``: what a forked child delivered is seen."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write_batch(self, items: Sequence[bytes]) -> None:
        with open(self.path, "ab") as file:
            file.write(b"".join(item + b"\n" for item in items))


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


def test_an_object_whose_hook_did_not_run_starts_over_by_its_pid_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork that runs no at-fork hooks (a C extension's ``fork()``): a delivery made in
    the parent still sees, on its next use in the child, that its thread and queue are
    the parent's, starts its own thread and delivers the child's item alone."""
    out = tmp_path / "out"
    delivery = BatchDelivery(FileSink(out), name="fork", flush_interval=60)
    try:
        delivery.put(b"parent")
        assert delivery.flush(10)
        delivery.put(b"parent-queued")  # still queued when the child is forked
        monkeypatch.setattr(fork, "_HOOKS", {})  # the child runs no hook of ours
        assert in_child(lambda: (delivery.put(b"child"), delivery.flush(10))[1])
        assert out.read_bytes().splitlines() == [b"parent", b"child"]
    finally:
        delivery.close(5)


def test_only_bound_methods_are_taken() -> None:
    """A plain function has no object to hold weakly: it is refused with a TypeError that
    says what is needed."""
    with pytest.raises(TypeError, match="needs a bound method"):
        after_fork_in_child(print)
