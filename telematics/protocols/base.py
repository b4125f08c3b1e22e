"""The records every protocol decoder produces, and the contract decoders follow.

Decoders are pure: bytes (or text) in, records out, no I/O, no Django. Transports
(TCP/UDP/HTTP/MQTT/CoAP servers) frame the byte stream, authenticate the unit named
by a decoded frame, store the records, and only then send the reply the decoder
prepared. Keeping the reply in the decoded result lets each protocol say exactly
what its units expect while the transport stays protocol-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CAN package imports this module for DecodeError
    from telematics.can.signals import FaultCode, SignalSample


class DecodeError(ValueError):
    """A frame that cannot be decoded. Each protocol raises its own subclass.

    Arbitrary input must raise nothing but a subclass of this: a listener counts and
    logs it and carries on with the next frame.
    """


class FrameTooLarge(DecodeError):
    """A frame announces a length over the transport's limit: the connection is cut."""


@dataclass(slots=True)
class Fix:
    """One position report from a unit (a "record" in Teltonika's words).

    Units are the platform's canonical ones: degrees, metres above sea level, km/h,
    degrees clockwise from north, kilometres for the odometer. ``fix_time`` is an
    aware UTC datetime taken from the unit (never the server clock).
    """

    fix_time: datetime
    latitude: float
    longitude: float
    altitude: float | None = None
    speed_kmh: float | None = None
    course: float | None = None
    satellites: int | None = None
    hdop: float | None = None
    valid: bool = True
    ignition: bool | None = None
    odometer_km: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CommandResponse:
    """A unit's answer to a server command (Teltonika Codec 12, GT06 0x15/0x21...)."""

    text: str
    received_time: datetime | None = None


@dataclass(slots=True)
class Decoded:
    """What one frame said.

    - ``identifier``: set when the frame names the unit (a login, or a UDP packet
      that carries the IMEI). The transport authenticates it before anything else.
    - ``fixes`` / ``responses``: records to store for the connection's unit.
    - ``reply``: bytes to send once the unit is accepted and the records are durably
      stored (``None``: the protocol expects no answer to this frame).
    - ``refusal``: bytes to send instead when the identifier is refused.
    - ``events``: non-position happenings without a fix (heartbeat, status), kept as
      attributes for the unit's latest state and the frame counters.
    - ``samples`` / ``faults``: vehicle signals and fault codes read from the CAN bus.
    - ``fault_reports``: sources that sent a complete list of their active faults (a
      DM1, an OBD-II mode 03 reply) and when; an open fault of such a source that is not
      in the list has cleared.
    """

    identifier: str | None = None
    fixes: list[Fix] = field(default_factory=list)
    responses: list[CommandResponse] = field(default_factory=list)
    reply: bytes | None = None
    refusal: bytes | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: list[SignalSample] = field(default_factory=list)
    faults: list[FaultCode] = field(default_factory=list)
    fault_reports: dict[str, datetime] = field(default_factory=dict)
