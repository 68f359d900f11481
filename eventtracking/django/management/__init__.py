"""Management commands of the event-tracking Django app."""
