"""Vehicle CAN decoding: OBD-II, J1939, DBC files and Teltonika CAN IO elements.

Pure library: bytes, text and DBC files in; canonical :class:`SignalSample` and
:class:`FaultCode` records out. No Django, no I/O beyond reading files passed in.
"""

from telematics.can.dbc import DbcDecoder, load_dbc
from telematics.can.decoder import DecodeResult, VehicleCanDecoder
from telematics.can.errors import CanDecodeError, DbcError, DbcMappingError
from telematics.can.frames import CanFrame, parse_candump, parse_json_frames, read_log_file
from telematics.can.j1939 import BamAssembler, J1939Decoder, parse_j1939_id
from telematics.can.obd2 import decode_obd2
from telematics.can.signals import SIGNALS, FaultCode, Signal, SignalSample
from telematics.can.teltonika_io import signals_from_io

__all__ = [
    "SIGNALS",
    "BamAssembler",
    "CanDecodeError",
    "CanFrame",
    "DbcDecoder",
    "DbcError",
    "DbcMappingError",
    "DecodeResult",
    "FaultCode",
    "J1939Decoder",
    "Signal",
    "SignalSample",
    "VehicleCanDecoder",
    "decode_obd2",
    "load_dbc",
    "parse_candump",
    "parse_j1939_id",
    "parse_json_frames",
    "read_log_file",
    "signals_from_io",
]
