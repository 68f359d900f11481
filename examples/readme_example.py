"""The README's example, run as written, with nothing configured.

``make demo`` runs this first. With no tracker registered, ``get_tracker()`` returns the
fallback tracker, which prints each event as a JSON line on standard output. Other
demos import :func:`run_readme_example` to send the same three events to their own
backends. The last one, ``address.create``, carries nested data: storage without a
schema keeps it as it was given.
"""

from __future__ import annotations


def run_readme_example() -> None:
    """Emit the README's three events through the default tracker."""
    from eventtracking import tracker

    tracker = tracker.get_tracker()
    tracker.enter_context('outer', {'user_id': 10938})
    tracker.emit('navigation.request', {'url': 'http://www.edx.org/some/path/1'})

    with tracker.context({'user_id': 11111, 'session_id': '2987lkjdyoioey'}):
        tracker.emit('navigation.request', {'url': 'http://www.edx.org/some/path/2'})

    tracker.emit('address.create', {
        'name': 'foo',
        'address': {'postal_code': '90210', 'country': 'United States'},
    })
    tracker.exit_context('outer')


if __name__ == "__main__":
    import sys

    # On standard error, so that standard output holds only the events.
    print(
        "The README example, run as written. Nothing is configured, so get_tracker() "
        "gives the fallback tracker, which prints each event as a line of JSON:",
        file=sys.stderr,
        flush=True,
    )
    run_readme_example()
