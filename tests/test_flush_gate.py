"""The handshake between the callers of a delivery and its thread."""

from __future__ import annotations

import threading
import time

from eventtracking.delivery._flush_gate import FlushGate


def test_a_flush_is_urgent_until_the_thread_reports_its_ticket_done() -> None:
    """A request makes the orders urgent; reporting the newest ticket done ends that."""
    gate = FlushGate()
    assert not gate.orders().urgent
    ticket = gate.request(retry_now=False)
    orders = gate.orders()
    assert orders.urgent and orders.ticket == ticket
    gate.done(orders.ticket)
    assert not gate.orders().urgent


def test_a_retry_is_handed_out_once() -> None:
    """retry_now reaches the thread in one step's orders only, and a flush that does not
    ask for it does not cancel one that did."""
    gate = FlushGate()
    gate.request(retry_now=True)
    gate.request(retry_now=False)
    assert gate.orders().retry_now
    assert not gate.orders().retry_now


def test_done_releases_every_waiter_up_to_its_ticket() -> None:
    """Waiters on older tickets are released by a newer ticket's report, from another
    thread; a waiter on a newer ticket is not."""
    gate = FlushGate()
    first = gate.request(retry_now=False)
    second = gate.request(retry_now=False)
    results: list[bool] = []
    waiter = threading.Thread(
        target=lambda: results.append(gate.wait(first, time.monotonic() + 60, alive=lambda: True))
    )
    waiter.start()
    gate.done(second)
    waiter.join(60)
    assert results == [True]
    third = gate.request(retry_now=False)
    assert not gate.wait(third, time.monotonic() + 0.05, alive=lambda: True)


def test_wait_gives_up_when_the_thread_is_gone_or_failed() -> None:
    """Waiting ends with False at once when the thread is not alive, or when the failure
    test says so, long before the deadline."""
    gate = FlushGate()
    ticket = gate.request(retry_now=False)
    far = time.monotonic() + 60
    assert not gate.wait(ticket, far, alive=lambda: False)
    calls: list[int] = []

    def failed() -> bool:
        calls.append(1)
        return len(calls) > 2

    assert not gate.wait(ticket, far, alive=lambda: True, failed=failed)
    assert len(calls) == 3


def test_stop_is_in_the_orders() -> None:
    """After stop(), every step's orders say stopping."""
    gate = FlushGate()
    assert not gate.orders().stopping
    gate.stop()
    assert gate.orders().stopping
