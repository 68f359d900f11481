"""A minimal Django project that tracks events with event-tracking's Django app."""
