"""Exceptions of the CAN decoding package."""

from __future__ import annotations

from telematics.protocols.base import DecodeError


class CanDecodeError(DecodeError):
    """A CAN frame, log line or DBC that cannot be decoded.

    A ``ValueError`` (through :class:`~telematics.protocols.base.DecodeError`), so callers
    that already count and skip bad protocol frames handle CAN ones the same way.
    """


class DbcError(CanDecodeError):
    """A DBC file that does not parse, or a signal mapping that names nothing in it."""


class DbcMappingError(DbcError):
    """The DBC parses, but the mapping names a message, signal or platform signal that does
    not exist; kept apart so an upload form can point at the mapping, not the file."""
