"""The Django app: a settings-driven tracker, request-context middleware, checks, commands.

Add ``'eventtracking.django'`` to ``INSTALLED_APPS``; see ``docs/django.rst``.
"""

from eventtracking.django.django_tracker import DjangoTracker

__all__ = ["DjangoTracker"]
