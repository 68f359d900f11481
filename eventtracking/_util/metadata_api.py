"""The seam between event documentation records and the backends that store them.

Backends import the two names they need from here rather than from
:mod:`eventtracking.metadata`, so that importing a backend does not import the registry,
the validator and the catalogue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking.typing import MetadataBackend

LOG = logging.getLogger("eventtracking.metadata")
_RATE_LIMITED = RateLimitedLogger(LOG)

#: The key, inside an event's ``context``, that holds the ``id`` of the documentation
#: record of a registered event's type (one version of it).
REFERENCE_KEY = "eventtracking_type"

#: The ``name`` of the line a :class:`~eventtracking.backends.logger.LoggerBackend`
#: writes for a documentation record (the record itself is its ``data``).
METADATA_EVENT_NAME = "eventtracking.metadata"


def deliver_metadata(
    components: Iterable[tuple[str, Any]], record: dict[str, Any], counters: Counters
) -> None:
    """Call ``send_metadata(record)`` on each component that has one.

    A component that raises is logged at a limited rate and counted in ``counters`` as
    ``failed['metadata:<name>']``; it never stops the others.
    """
    for name, component in components:
        if not isinstance(component, MetadataBackend):
            continue
        try:
            component.send_metadata(record)
        except Exception:
            counters.incr("failed", f"metadata:{name}")
            _RATE_LIMITED.error(
                f"metadata:{name}",
                "Backend %r failed to store the documentation record %r of %r",
                name,
                record.get("id"),
                record.get("name"),
                exc_info=True,
            )
