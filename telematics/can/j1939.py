"""SAE J1939 broadcasts from trucks, buses and machines (29-bit CAN identifiers).

Identifier: priority (bits 28-26) | EDP (25) | DP (24) | PF (23-16) | PS (15-8) | SA (7-0).
PGN = EDP DP PF and, for PDU2 (PF >= 240), PS as group extension; for PDU1 (PF < 240)
PS is the destination address and is not part of the PGN. Multi-byte values are
little-endian.

Parameters decoded (byte positions 1-based as in J1939-71; sources after each):

| PG | PGN | Parameter (SPN) | Bytes | Scaling | Source |
|---|---|---|---|---|---|
| EEC1 | 61444 | engine speed (190) | 4-5 | 0.125 rpm/bit | J1939 DBC; FMB630 manual p.136 |
| CCVS | 65265 | wheel-based speed (84) | 2-3 | 1/256 km/h/bit | J1939 DBC fragments |
| ET1 | 65262 | coolant temp (110) | 1 | 1 degC/bit, -40 | see note 1 |
| LFE | 65266 | fuel rate (183) | 1-2 | 0.05 L/h/bit | see note 2 (UNCONFIRMED) |
| AMB | 65269 | ambient air temp (171) | 4-5 | 0.03125 degC/bit, -273 | see note 3 |
| DD | 65276 | fuel level 1 (96) | 2 | 0.4 %/bit | FMB630 manual p.136; byte: note 4 |
| VDHR | 65217 | total distance (917) | 1-4 | 5 m/bit | FMB630 manual p.138 |
| HOURS | 65253 | engine hours (247) | 1-4 | 0.05 h/bit | FMB630 manual p.136 |
| LFC | 65257 | total fuel used (250) | 5-8 | 0.5 L/bit | FM6320 manual table 55 |

Notes from checking the can.md items marked unconfirmed:

1. ET1 coolant: "1 deg C/bit, -40 deg C offset, data range -40 to 210" is restated from
   J1939-71 in Teltonika's FM6320 user manual (manualshive p.116); byte 1 per the public
   SPN/PGN table (scribd 429555595, "pos 1, 8 bit, SPN 110").
2. LFE fuel rate: no primary document with 0.05 L/h was retrieved. Public J1939 decoders
   use 0.05 L/h on bytes 1-2 and list the range 0-3212.75 L/h, which is 64,255 x 0.05, i.e.
   exactly J1939's largest valid 2-byte value times 0.05. Decoded, but treat as unconfirmed.
3. AMB: Detroit Diesel DDEC VI Application and Installation manual (7SA827, p.6-30):
   "Bytes 4,5 Ambient Air Temperature (SPN 171) 0.03125 degC/Bit, -273 degC offset".
4. DD: the byte position (2) is the J1939-71/FMS layout as given in can.md; no primary
   document with the position was retrieved. The 0.4 %/bit scaling is confirmed.

"Not available" and error values are skipped, never returned as numbers. J1939-71 keeps
raw values above 0xFA (1 byte), 0xFAFF (2 bytes) and 0xFAFFFFFF (4 bytes) for indicators
(0xFE.. error, 0xFF.. not available). The range table itself was not retrieved, but every
published data range above ends exactly there: 8,031.875 rpm = 0xFAFF x 0.125,
250.996 km/h = 0xFAFF / 256, 210 degC = 0xFA - 40, 210,554,060.75 h = 0xFAFFFFFF x 0.05.

DM1 (65226) layout, confirmed in the DDEC VI manual (p.6-38): byte 1 lamps, bits 8-7 MIL,
6-5 red stop, 4-3 amber warning, 2-1 protect (00 off, 01 on, 10 error, 11 n/a); byte 2
flash/reserved; then 4 bytes per DTC: SPN low 8 bits, SPN second byte, byte 3 bits 8-6 the
SPN's 3 most significant bits and bits 5-1 the FMI, byte 4 bit 8 the SPN conversion method
and bits 7-1 the occurrence count. Conversion method 0 is that current layout (python-j1939
logs "deprecated spn conversion modes are not supported" for CM=1; DynaGen manuals word the
bit the other way round). CM=1 codes are decoded with the same layout and keep
``conversion_method=1`` so a reader can distrust their SPN. More than one DTC does not fit
a single frame, so DM1 arrives with the BAM transport protocol: TP.CM (PF 0xEC) with control
byte 32, size (2 bytes), packet count, 0xFF, PGN (3 bytes); then TP.DT (PF 0xEB) frames of
sequence number + 7 bytes (embeddedflakes.com, "J1939 Transport Protocol").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from telematics.can.errors import CanDecodeError
from telematics.can.frames import CanFrame
from telematics.can.signals import (
    AMBIENT_TEMPERATURE,
    COOLANT_TEMPERATURE,
    ENGINE_HOURS,
    ENGINE_SPEED,
    FUEL_LEVEL,
    FUEL_RATE,
    FUEL_USED_TOTAL,
    ODOMETER,
    VEHICLE_SPEED,
    FaultCode,
    SignalSample,
)

PGN_EEC1 = 61444
PGN_CCVS = 65265
PGN_ET1 = 65262
PGN_LFE = 65266
PGN_AMB = 65269
PGN_DD = 65276
PGN_VDHR = 65217
PGN_HOURS = 65253
PGN_LFC = 65257
PGN_DM1 = 65226
PGN_TP_CM = 0xEC00
PGN_TP_DT = 0xEB00

TP_CM_BAM = 32
GLOBAL_ADDRESS = 0xFF
BAM_MAX_SIZE = 1785  # 255 packets x 7 bytes
BAM_PACKET_TIMEOUT = 0.75  # J1939-21 T1 between TP.DT packets, seconds

# Largest raw value that is a measurement, by parameter length in bytes.
MAX_VALID = {1: 0xFA, 2: 0xFAFF, 4: 0xFAFF_FFFF}


class J1939Id(NamedTuple):
    """A 29-bit identifier split into its J1939 fields."""

    priority: int
    pgn: int
    source_address: int
    destination_address: int | None  # PDU1 only; None for broadcast PDU2 groups


def parse_j1939_id(can_id: int) -> J1939Id:
    """Split a 29-bit id: ``0x0CF004FE`` is priority 3, PGN 61444, SA 0xFE."""
    pf = (can_id >> 16) & 0xFF
    ps = (can_id >> 8) & 0xFF
    pgn = (can_id >> 8) & 0x3FFFF
    destination = None
    if pf < 240:
        pgn &= 0x3FF00
        destination = ps
    return J1939Id((can_id >> 26) & 0x7, pgn, can_id & 0xFF, destination)


@dataclass(frozen=True, slots=True)
class Parameter:
    """One SPN inside a parameter group: where it sits and how it scales."""

    signal: str
    start: int  # 0-based byte offset
    length: int  # bytes: 1, 2 or 4
    scale: float
    offset: float


@dataclass(frozen=True, slots=True)
class ParameterGroup:
    acronym: str
    parameters: tuple[Parameter, ...]
    min_length: int  # bytes the frame must carry to hold every parameter


def _group(acronym: str, *parameters: Parameter) -> ParameterGroup:
    return ParameterGroup(acronym, parameters, max(p.start + p.length for p in parameters))


PARAMETER_GROUPS: dict[int, ParameterGroup] = {
    PGN_EEC1: _group("EEC1", Parameter(ENGINE_SPEED.key, 3, 2, 0.125, 0.0)),
    PGN_CCVS: _group("CCVS", Parameter(VEHICLE_SPEED.key, 1, 2, 1 / 256, 0.0)),
    PGN_ET1: _group("ET1", Parameter(COOLANT_TEMPERATURE.key, 0, 1, 1.0, -40.0)),
    PGN_LFE: _group("LFE", Parameter(FUEL_RATE.key, 0, 2, 0.05, 0.0)),
    PGN_AMB: _group("AMB", Parameter(AMBIENT_TEMPERATURE.key, 3, 2, 0.03125, -273.0)),
    PGN_DD: _group("DD", Parameter(FUEL_LEVEL.key, 1, 1, 0.4, 0.0)),
    PGN_VDHR: _group("VDHR", Parameter(ODOMETER.key, 0, 4, 0.005, 0.0)),
    PGN_HOURS: _group("HOURS", Parameter(ENGINE_HOURS.key, 0, 4, 0.05, 0.0)),
    PGN_LFC: _group("LFC", Parameter(FUEL_USED_TOTAL.key, 4, 4, 0.5, 0.0)),
}


def decode_parameters(
    pgn: int, data: bytes, source_address: int, time: datetime | None
) -> list[SignalSample]:
    """Decode the known SPNs of one parameter group; n/a and error values are skipped."""
    group = PARAMETER_GROUPS.get(pgn)
    if group is None:
        raise CanDecodeError(f"PGN {pgn} (0x{pgn:04X}) from SA 0x{source_address:02X} not decoded")
    if len(data) < group.min_length:
        raise CanDecodeError(
            f"PGN {pgn} ({group.acronym}) from SA 0x{source_address:02X} has {len(data)} bytes,"
            f" needs {group.min_length}"
        )
    source = f"j1939:{group.acronym}:{source_address:02X}"
    samples = []
    for p in group.parameters:
        raw = int.from_bytes(data[p.start : p.start + p.length], "little")
        if raw > MAX_VALID[p.length]:
            continue  # not available / error indicator
        samples.append(SignalSample(p.signal, raw * p.scale + p.offset, time, source))
    return samples


def _lamp(bits: int) -> bool | None:
    return {0: False, 1: True}.get(bits)


def decode_dm1(data: bytes, source_address: int, time: datetime | None) -> list[FaultCode]:
    """Active faults of one DM1 payload (single frame or reassembled BAM).

    An all-zero DTC (SPN 0, FMI 0) means "no active fault" and an all-ones DTC is padding;
    both are skipped. Trailing bytes shorter than a DTC are padding too.
    """
    if len(data) < 6:
        raise CanDecodeError(
            f"DM1 from SA 0x{source_address:02X} has {len(data)} bytes, needs lamp bytes and"
            " one DTC (6)"
        )
    lamps = data[0]
    mil, red, amber, protect = (
        _lamp((lamps >> 6) & 3),
        _lamp((lamps >> 4) & 3),
        _lamp((lamps >> 2) & 3),
        _lamp(lamps & 3),
    )
    source = f"j1939:DM1:{source_address:02X}"
    faults = []
    for i in range(2, len(data) - 3, 4):
        b0, b1, b2, b3 = data[i : i + 4]
        if b0 == b1 == b2 == b3 == 0 or b0 == b1 == b2 == b3 == 0xFF:
            continue
        spn = b0 | (b1 << 8) | ((b2 >> 5) << 16)
        fmi = b2 & 0x1F
        faults.append(
            FaultCode(
                code=f"SPN{spn}-FMI{fmi}",
                source=source,
                time=time,
                spn=spn,
                fmi=fmi,
                occurrence=b3 & 0x7F,
                conversion_method=b3 >> 7,
                mil_lamp=mil,
                red_stop_lamp=red,
                amber_warning_lamp=amber,
                protect_lamp=protect,
            )
        )
    return faults


@dataclass(slots=True)
class _BamSession:
    pgn: int
    size: int
    packets: int
    received: bytearray
    next_sequence: int
    last_time: float


class BamAssembler:
    """Reassembles J1939-21 BAM transfers, one open transfer per source address.

    A new announce from an address replaces its unfinished transfer (as J1939-21 has the
    receiver do); an out-of-order packet or a gap over 750 ms (T1) drops the transfer and
    raises, so a corrupted DM1 is never decoded from half its bytes.
    """

    def __init__(self, timeout: float = BAM_PACKET_TIMEOUT) -> None:
        self.timeout = timeout
        self._sessions: dict[int, _BamSession] = {}

    def __len__(self) -> int:
        """Transfers still waiting for packets."""
        return len(self._sessions)

    def connection_management(self, data: bytes, source_address: int, timestamp: float) -> None:
        """Handle a TP.CM frame: open a session on a BAM announce, reject anything else."""
        if len(data) < 8:
            raise CanDecodeError(
                f"TP.CM from SA 0x{source_address:02X} has {len(data)} bytes, needs 8"
            )
        control = data[0]
        if control != TP_CM_BAM:
            raise CanDecodeError(
                f"TP.CM control byte {control} from SA 0x{source_address:02X} is not BAM (32);"
                " only broadcast transfers are reassembled"
            )
        size = data[1] | (data[2] << 8)
        packets = data[3]
        pgn = data[5] | (data[6] << 8) | (data[7] << 16)
        if not 9 <= size <= BAM_MAX_SIZE or packets != (size + 6) // 7:
            self._sessions.pop(source_address, None)
            raise CanDecodeError(
                f"BAM from SA 0x{source_address:02X} announces {size} bytes in {packets}"
                " packets, which do not agree"
            )
        self._sessions[source_address] = _BamSession(pgn, size, packets, bytearray(), 1, timestamp)

    def data_transfer(
        self, data: bytes, source_address: int, timestamp: float
    ) -> tuple[int, bytes] | None:
        """Handle a TP.DT frame; return ``(pgn, payload)`` once the transfer is complete."""
        session = self._sessions.get(source_address)
        if session is None:
            raise CanDecodeError(f"TP.DT from SA 0x{source_address:02X} without a BAM announce")
        if len(data) < 8 or data[0] != session.next_sequence:
            del self._sessions[source_address]
            got = data[0] if data else None
            raise CanDecodeError(
                f"BAM from SA 0x{source_address:02X}: expected packet {session.next_sequence},"
                f" got {got} ({len(data)} bytes); transfer dropped"
            )
        if timestamp - session.last_time > self.timeout:
            del self._sessions[source_address]
            raise CanDecodeError(
                f"BAM from SA 0x{source_address:02X}: {timestamp - session.last_time:.3f} s"
                f" between packets exceeds {self.timeout} s; transfer dropped"
            )
        session.received += data[1:8]
        session.last_time = timestamp
        if session.next_sequence < session.packets:
            session.next_sequence += 1
            return None
        del self._sessions[source_address]
        return session.pgn, bytes(session.received[: session.size])


class J1939Decoder:
    """Decodes J1939 frames to samples and faults, reassembling BAM transfers on the way."""

    def __init__(self, assembler: BamAssembler | None = None) -> None:
        self.assembler = assembler if assembler is not None else BamAssembler()

    def decode(
        self, frame: CanFrame, time: datetime | None = None
    ) -> tuple[list[SignalSample], list[FaultCode]]:
        """Decode one 29-bit frame; raise :class:`CanDecodeError` for what it cannot read.

        Transport frames that do not complete a transfer return nothing.
        """
        if not frame.extended:
            raise CanDecodeError(f"id 0x{frame.can_id:03X} is 11-bit; J1939 uses 29-bit ids")
        can_id = frame.can_id
        sa = can_id & 0xFF
        pf = (can_id >> 16) & 0xFF
        pgn = (can_id >> 8) & 0x3FFFF
        if pf < 240:
            pgn &= 0x3FF00
        if time is None:
            time = datetime.fromtimestamp(frame.timestamp, UTC)
        if pgn in PARAMETER_GROUPS:
            return decode_parameters(pgn, frame.data, sa, time), []
        if pgn == PGN_DM1:
            return [], decode_dm1(frame.data, sa, time)
        if pgn == PGN_TP_CM:
            self._require_global(frame, "TP.CM")
            self.assembler.connection_management(frame.data, sa, frame.timestamp)
            return [], []
        if pgn == PGN_TP_DT:
            self._require_global(frame, "TP.DT")
            done = self.assembler.data_transfer(frame.data, sa, frame.timestamp)
            if done is None:
                return [], []
            inner_pgn, payload = done
            if inner_pgn == PGN_DM1:
                return [], decode_dm1(payload, sa, time)
            if inner_pgn in PARAMETER_GROUPS:
                return decode_parameters(inner_pgn, payload, sa, time), []
            raise CanDecodeError(
                f"BAM from SA 0x{sa:02X} carried PGN {inner_pgn} (0x{inner_pgn:04X}),"
                " which is not decoded"
            )
        raise CanDecodeError(f"PGN {pgn} (0x{pgn:04X}) from SA 0x{sa:02X} not decoded")

    @staticmethod
    def _require_global(frame: CanFrame, what: str) -> None:
        destination = (frame.can_id >> 8) & 0xFF
        if destination != GLOBAL_ADDRESS:
            raise CanDecodeError(
                f"{what} from SA 0x{frame.can_id & 0xFF:02X} to DA 0x{destination:02X} belongs"
                " to a peer-to-peer (RTS/CTS) transfer; only BAM is reassembled"
            )
