"""``manage.py eventtracking_*`` commands."""
