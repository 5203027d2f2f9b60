"""Exceptions that reach the user.

The CLI maps :class:`InputError` to exit status 2 and :class:`NotScreenableError` to exit
status 3; their messages are one line meant for the user, without a traceback.
"""

from __future__ import annotations

__all__ = ["InputError", "NotScreenableError", "OsteoscreenError"]


class OsteoscreenError(Exception):
    """Base class of the errors osteoscreen reports to its user."""


class NotScreenableError(OsteoscreenError):
    """The input is readable but cannot be screened (no usable CT series, not CT, ...)."""


class InputError(OsteoscreenError):
    """The input is missing or unusable as given (wrong path, wrong kind of file)."""
