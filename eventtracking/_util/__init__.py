"""Small helpers that every layer of the package shares; none of them knows an event path.

* ``delivery_api``: calling the optional ``flush``, ``close`` and ``stats`` across a
  backend tree, with one deadline;
* ``engines``: building a backend or processor from its dotted path in settings;
* ``escape``: values from a message's sender made safe for a log line;
* ``files``: writing a file whole, never through a symbolic link;
* ``fork``: starting over in a forked child;
* ``metadata_api``: the seam between event documentation and the backends;
* ``options``: checks of option values;
* ``ratelimit``: logging at a limited rate;
* ``silent``: telling a user why a LoggerBackend writes nothing;
* ``stats``: thread-safe counters;
* ``watched``: containers that report every change, for caches built from them.

They import only the standard library, :mod:`eventtracking.exceptions` and each other.
"""
