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
from telematics.can.j1939 import PGN_DM1, J1939Decoder, parse_j1939_id
from telematics.can.obd2 import OBD_RESPONSE_IDS, decode_obd2
from telematics.can.signals import FaultCode, SignalSample

DEFAULT_MAX_ERRORS = 200


def _frame_time(timestamp: float) -> datetime:
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (ValueError, OverflowError, OSError, TypeError):
        raise CanDecodeError(f"timestamp {timestamp!r} is not a usable time") from None


class DecodeResult(NamedTuple):
    """What a batch said. ``errors`` is capped; the last line counts the ones left out.

    ``fault_reports`` maps each source that sent a complete list of its active faults in
    this batch (a J1939 DM1, an OBD-II mode 03/07 reply) to the time of its latest list,
    even when the list was empty: that is how a cleared fault is noticed.
    """

    samples: list[SignalSample]
    faults: list[FaultCode]
    errors: list[str]
    fault_reports: dict[str, datetime]


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
        reports: dict[str, datetime] = {}
        dropped = 0
        dbc = self.dbc
        j1939 = self.j1939
        for index, frame in enumerate(frames):
            new_faults: list[FaultCode] = []
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
                    service = frame.data[1] if len(frame.data) > 1 else None
                    if service in (0x43, 0x47):
                        kind = "stored" if service == 0x43 else "pending"
                        reports[f"obd2:{can_id:03X}:{kind}"] = time
                elif extended:
                    new_samples, new_faults = j1939.decode(frame, time)
                    samples += new_samples
                    faults += new_faults
                    identity = parse_j1939_id(can_id)
                    if identity.pgn == PGN_DM1:
                        reports[f"j1939:DM1:{identity.source_address:02X}"] = time
                else:
                    raise CanDecodeError(f"unknown 11-bit id 0x{can_id:03X}")
                for fault in new_faults:
                    reports[fault.source] = time  # a BAM-reassembled DM1 names its source
            except (CanDecodeError, ValueError, TypeError) as exc:
                if len(errors) < self.max_errors:
                    errors.append(f"frame {index}: {exc}")
                else:
                    dropped += 1
        if dropped:
            errors.append(f"... and {dropped} more errors not listed")
        return DecodeResult(samples, faults, errors, reports)
