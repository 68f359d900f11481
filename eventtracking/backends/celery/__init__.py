"""The Celery delivery path, web side and worker side.

Users import :class:`~eventtracking.backends.async_routing.AsyncRoutingBackend` from its
4.x path and point Celery at ``eventtracking.tasks``; both modules re-export from here.

``_backend``
    :class:`AsyncRoutingBackend`, the web side: processors, then a batch of entries
    published through its delivery (spool, batching).
``_sink``
    Publishing a batch as one Celery message, with its record in the Redis ledger;
    task names and the import of Celery.
``_wire``
    The entries' format (JSON text with the event's id), the making of event ids, and
    the messages' signatures.
``_tasks``
    The declaration of the two Celery tasks (names ``eventtracking.tasks.send_events``
    and ``eventtracking.tasks.send_event``, unchanged from 4.x).
``_worker``, ``_leaves``, ``_ledger``
    The worker side: the tasks' bodies and a message's life, delivering leaf by leaf,
    and the Redis ledger's removals and sweeps of lost messages.

Nothing here is imported by this ``__init__``: a module that needs one piece (the
wire format, say) does not load Celery or the backend.
"""
