"""``manage.py eventtracking_catalog``: write the event catalogue of this project.

As ``python -m eventtracking catalog``, with the project's registry: what its code
registered while Django started, plus ``EVENT_TRACKING_VALIDATION['EVENT_TYPES']``
(see ``docs/metadata.rst``, *The catalogue*).
"""

from __future__ import annotations

import argparse
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventtracking.metadata import _cli
from eventtracking.metadata.loading import load

#: The setting whose ``EVENT_TYPES`` entry is loaded (see eventtracking.metadata).
VALIDATION_SETTING = "EVENT_TRACKING_VALIDATION"


class Command(BaseCommand):
    """Write the catalogue of documented event types."""

    help = _cli.DESCRIPTION

    def add_arguments(self, parser: CommandParser) -> None:
        _cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        setting = getattr(settings, VALIDATION_SETTING, None)
        try:
            if isinstance(setting, dict) and setting.get("EVENT_TYPES") is not None:
                load(setting["EVENT_TYPES"])
            _cli.write(argparse.Namespace(**options), self.stdout)
        except (_cli.CatalogError, ValueError) as exc:
            raise CommandError(str(exc)) from None
