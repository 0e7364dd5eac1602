"""What repositories raise instead of SQLAlchemy's exceptions, so their callers need not import it."""

from __future__ import annotations


class AlreadyTaken(Exception):
    """A unique constraint refused the write: another row holds the value. The transaction can't
    go on; let the exception leave ``Database.session()``, which rolls it back."""


class LastAdministrator(Exception):
    """The change would leave no enabled administrator; it was not made."""
