"""One entry point for a batch of CAN frames from one vehicle.

Routing, in order:

1. a DBC (optional) decodes every id it defines, so a vehicle-specific DBC can override
   what the generic decoders would make of an id;
2. 11-bit ids 0x7E8-0x7EF are OBD-II replies;
3. other 29-bit ids are J1939 (BAM transfers reassembled across batches);
4. anything else is an error ("unknown 11-bit id").

A bad frame never raises and never costs the good frames of the batch: it becomes one
line in ``errors``. The decoder keeps BAM state between calls, so use one instance per
vehicle (per CAN bus).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from telematics.can.dbc import DbcDecoder
from telematics.can.errors import CanDecodeError
from telematics.can.frames import CanFrame
from telematics.can.j1939 import J1939Decoder
from telematics.can.obd2 import OBD_RESPONSE_IDS, decode_obd2
from telematics.can.signals import FaultCode, SignalSample

DEFAULT_MAX_ERRORS = 200


def _frame_time(timestamp: float) -> datetime:
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (ValueError, OverflowError, OSError, TypeError):
        raise CanDecodeError(f"timestamp {timestamp!r} is not a usable time") from None


class DecodeResult(NamedTuple):
    """What a batch said. ``errors`` is capped; the last line counts the ones left out."""

    samples: list[SignalSample]
    faults: list[FaultCode]
    errors: list[str]


class VehicleCanDecoder:
    """Route frames to the DBC, OBD-II or J1939 decoder and collect what they report."""

    def __init__(self, dbc: DbcDecoder | None = None, max_errors: int = DEFAULT_MAX_ERRORS):
        self.dbc = dbc
        self.j1939 = J1939Decoder()
        self.max_errors = max_errors

    def decode(self, frames: Iterable[CanFrame]) -> DecodeResult:
        samples: list[SignalSample] = []
        faults: list[FaultCode] = []
        errors: list[str] = []
        dropped = 0
        dbc = self.dbc
        j1939 = self.j1939
        for index, frame in enumerate(frames):
            try:
                time = _frame_time(frame.timestamp)
                can_id = frame.can_id
                extended = frame.extended
                if dbc is not None and dbc.knows(can_id, extended):
                    samples += dbc.decode(frame, time)
                elif not extended and can_id in OBD_RESPONSE_IDS:
                    new_samples, new_faults = decode_obd2(frame, time)
                    samples += new_samples
                    faults += new_faults
                elif extended:
                    new_samples, new_faults = j1939.decode(frame, time)
                    samples += new_samples
                    faults += new_faults
                else:
                    raise CanDecodeError(f"unknown 11-bit id 0x{can_id:03X}")
            except (CanDecodeError, ValueError, TypeError) as exc:
                if len(errors) < self.max_errors:
                    errors.append(f"frame {index}: {exc}")
                else:
                    dropped += 1
        if dropped:
            errors.append(f"... and {dropped} more errors not listed")
        return DecodeResult(samples, faults, errors)
