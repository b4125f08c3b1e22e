"""OBD-II (SAE J1979) replies read off a car's diagnostic CAN bus.

A telematics unit (or a logger on the OBD port) asks ``7DF 02 01 <PID>`` and the engine
ECUs answer on 11-bit ids 0x7E8-0x7EF as ISO-TP single frames ``<len> 41 <PID> A B C D``.
Only single frames are decoded: every mode-01 PID used here fits in one, and a fault
reply with more than two codes (an ISO-TP multi-frame) is reported as an error, not
guessed at.

Scalings (A, B, C, D are the bytes after ``41 <PID>``), with sources as collected in
``shared/data/protocols/can.md``: [WIKI-PID] Wikipedia "OBD-II PIDs" (SAE J1979 table),
[PY-OBD] python-OBD ``obd/decoders.py``/``UnitsAndScaling.py``, [CSS] CSS Electronics'
OBD2 DBC ``OBD2-v1.4.dbc``.

- 04 engine load ``A*100/255`` % [CSS factor 0.39216]; 05 coolant ``A-40`` degC [WIKI-PID,
  PY-OBD]; 0C engine speed ``(256A+B)/4`` rpm [WIKI-PID, PY-OBD UAS 0x07]; 0D speed ``A``
  km/h; 0F intake air ``A-40`` degC [CSS]; 10 MAF ``(256A+B)/100`` g/s; 11 throttle
  ``A*100/255`` %; 1F run time ``256A+B`` s; 21 distance with MIL on ``256A+B`` km; 2F fuel
  level ``A*100/255`` %; 31 distance since codes cleared ``256A+B`` km; 46 ambient ``A-40``
  degC; 5E fuel rate ``(256A+B)/20`` L/h [PY-OBD ``fuel_rate`` x0.05].
- A6 odometer ``(A<<24 | B<<16 | C<<8 | D)/10`` km. can.md marked this unconfirmed
  (python-OBD has no A6 decoder). Checked in this work: the formula is the Wikipedia
  OBD-II PID table's, and a Torque forum thread (torque-bhp.com, "Odometer(from ECU) bug",
  May 2023) reports that this exact formula gives the car's dashboard reading (31,580.6)
  where Torque's built-in one did not. SAE J1979-DA itself was not retrieved, so the /10
  rests on that table plus one field check.

Fault codes (services 03 stored, 07 pending): on CAN the reply is ``43 <count> <hi lo>...``
(python-OBD strips "the mode and DTC_count bytes"). Bits 15-14 of each 16-bit code pick the
letter (P, C, B, U), bits 13-12 the first digit, the remaining three nibbles print as hex
(python-OBD ``parse_dtc``: ``01000001 00100011`` is C0123). ``0000`` is padding.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from telematics.can.errors import CanDecodeError
from telematics.can.frames import CanFrame
from telematics.can.signals import (
    AMBIENT_TEMPERATURE,
    COOLANT_TEMPERATURE,
    DISTANCE_SINCE_CODES_CLEARED,
    DISTANCE_WITH_MIL_ON,
    ENGINE_LOAD,
    ENGINE_RUN_TIME,
    ENGINE_SPEED,
    FUEL_LEVEL,
    FUEL_RATE,
    INTAKE_AIR_TEMPERATURE,
    MASS_AIR_FLOW,
    ODOMETER,
    THROTTLE,
    VEHICLE_SPEED,
    FaultCode,
    SignalSample,
)

OBD_RESPONSE_IDS = range(0x7E8, 0x7F0)
SERVICE_01_RESPONSE = 0x41
SERVICE_03_RESPONSE = 0x43
SERVICE_07_RESPONSE = 0x47
NEGATIVE_RESPONSE = 0x7F


def _u8(d: bytes) -> int:
    return d[0]


def _u16(d: bytes) -> int:
    return (d[0] << 8) | d[1]


def _u32(d: bytes) -> int:
    return int.from_bytes(d[:4], "big")


# PID -> (signal key, data bytes, raw bytes -> physical value)
PIDS: dict[int, tuple[str, int, Callable[[bytes], float]]] = {
    0x04: (ENGINE_LOAD.key, 1, lambda d: d[0] * 100 / 255),
    0x05: (COOLANT_TEMPERATURE.key, 1, lambda d: d[0] - 40),
    0x0C: (ENGINE_SPEED.key, 2, lambda d: _u16(d) / 4),
    0x0D: (VEHICLE_SPEED.key, 1, _u8),
    0x0F: (INTAKE_AIR_TEMPERATURE.key, 1, lambda d: d[0] - 40),
    0x10: (MASS_AIR_FLOW.key, 2, lambda d: _u16(d) / 100),
    0x11: (THROTTLE.key, 1, lambda d: d[0] * 100 / 255),
    0x1F: (ENGINE_RUN_TIME.key, 2, _u16),
    0x21: (DISTANCE_WITH_MIL_ON.key, 2, _u16),
    0x2F: (FUEL_LEVEL.key, 1, lambda d: d[0] * 100 / 255),
    0x31: (DISTANCE_SINCE_CODES_CLEARED.key, 2, _u16),
    0x46: (AMBIENT_TEMPERATURE.key, 1, lambda d: d[0] - 40),
    0x5E: (FUEL_RATE.key, 2, lambda d: _u16(d) / 20),
    0xA6: (ODOMETER.key, 4, lambda d: _u32(d) / 10),
}

# Generic (SAE J2012 / ISO 15031-6) titles of common powertrain codes seen on fleet cars
# and vans; the same wording as python-OBD's ``obd/codes.py`` table.
DTC_DESCRIPTIONS: dict[str, str] = {
    "P0100": "Mass or Volume Air Flow Circuit Malfunction",
    "P0101": "Mass or Volume Air Flow Circuit Range/Performance Problem",
    "P0102": "Mass or Volume Air Flow Circuit Low Input",
    "P0103": "Mass or Volume Air Flow Circuit High Input",
    "P0104": "Mass or Volume Air Flow Circuit Intermittent",
    "P0106": "Manifold Absolute Pressure/Barometric Pressure Circuit Range/Performance Problem",
    "P0110": "Intake Air Temperature Circuit Malfunction",
    "P0113": "Intake Air Temperature Circuit High Input",
    "P0115": "Engine Coolant Temperature Circuit Malfunction",
    "P0117": "Engine Coolant Temperature Circuit Low Input",
    "P0118": "Engine Coolant Temperature Circuit High Input",
    "P0120": "Throttle/Pedal Position Sensor/Switch A Circuit Malfunction",
    "P0121": "Throttle/Pedal Position Sensor/Switch A Circuit Range/Performance Problem",
    "P0128": "Coolant Thermostat (Coolant Temperature Below Thermostat Regulating Temperature)",
    "P0130": "O2 Sensor Circuit Malfunction (Bank 1 Sensor 1)",
    "P0133": "O2 Sensor Circuit Slow Response (Bank 1 Sensor 1)",
    "P0135": "O2 Sensor Heater Circuit Malfunction (Bank 1 Sensor 1)",
    "P0141": "O2 Sensor Heater Circuit Malfunction (Bank 1 Sensor 2)",
    "P0171": "System Too Lean (Bank 1)",
    "P0172": "System Too Rich (Bank 1)",
    "P0174": "System Too Lean (Bank 2)",
    "P0175": "System Too Rich (Bank 2)",
    "P0300": "Random/Multiple Cylinder Misfire Detected",
    "P0301": "Cylinder 1 Misfire Detected",
    "P0302": "Cylinder 2 Misfire Detected",
    "P0303": "Cylinder 3 Misfire Detected",
    "P0304": "Cylinder 4 Misfire Detected",
    "P0305": "Cylinder 5 Misfire Detected",
    "P0306": "Cylinder 6 Misfire Detected",
    "P0325": "Knock Sensor 1 Circuit Malfunction (Bank 1 or Single Sensor)",
    "P0335": "Crankshaft Position Sensor A Circuit Malfunction",
    "P0340": "Camshaft Position Sensor Circuit Malfunction",
    "P0400": "Exhaust Gas Recirculation Flow Malfunction",
    "P0401": "Exhaust Gas Recirculation Flow Insufficient Detected",
    "P0402": "Exhaust Gas Recirculation Flow Excessive Detected",
    "P0420": "Catalyst System Efficiency Below Threshold (Bank 1)",
    "P0430": "Catalyst System Efficiency Below Threshold (Bank 2)",
    "P0440": "Evaporative Emission Control System Malfunction",
    "P0441": "Evaporative Emission Control System Incorrect Purge Flow",
    "P0442": "Evaporative Emission Control System Leak Detected (small leak)",
    "P0446": "Evaporative Emission Control System Vent Control Circuit Malfunction",
    "P0455": "Evaporative Emission Control System Leak Detected (gross leak)",
    "P0500": "Vehicle Speed Sensor Malfunction",
    "P0505": "Idle Control System Malfunction",
    "P0562": "System Voltage Low",
    "P0563": "System Voltage High",
    "P0700": "Transmission Control System Malfunction",
}

_DTC_LETTERS = "PCBU"


def dtc_to_string(high: int, low: int) -> str:
    """Two DTC bytes to the printed code: ``0x41 0x23`` is ``"C0123"``."""
    return f"{_DTC_LETTERS[high >> 6]}{(high >> 4) & 0x3}{high & 0xF:X}{low:02X}"


def frame_time(frame: CanFrame) -> datetime:
    """The frame's timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(frame.timestamp, UTC)


def decode_obd2(
    frame: CanFrame, time: datetime | None = None
) -> tuple[list[SignalSample], list[FaultCode]]:
    """Decode one OBD-II reply frame; raise :class:`CanDecodeError` if it is not one we read."""
    can_id = frame.can_id
    if frame.extended or can_id not in OBD_RESPONSE_IDS:
        raise CanDecodeError(f"id 0x{can_id:X} is not an OBD-II reply id (0x7E8-0x7EF)")
    data = frame.data
    if len(data) < 2:
        raise CanDecodeError(f"OBD-II reply on 0x{can_id:03X} has {len(data)} bytes, needs 2+")
    pci = data[0]
    if pci >> 4:
        raise CanDecodeError(
            f"OBD-II reply on 0x{can_id:03X} is an ISO-TP multi-frame part (PCI 0x{pci:02X});"
            " only single frames are decoded"
        )
    length = pci & 0x0F
    if length == 0 or length > len(data) - 1:
        raise CanDecodeError(
            f"OBD-II reply on 0x{can_id:03X} declares {length} bytes but carries {len(data) - 1}"
        )
    payload = data[1 : 1 + length]
    if time is None:
        time = frame_time(frame)
    service = payload[0]
    if service == SERVICE_01_RESPONSE:
        return [_decode_pid(can_id, payload, time)], []
    if service in (SERVICE_03_RESPONSE, SERVICE_07_RESPONSE):
        return [], _decode_dtcs(can_id, payload, time)
    if service == NEGATIVE_RESPONSE and len(payload) >= 3:
        raise CanDecodeError(
            f"OBD-II negative response on 0x{can_id:03X} to service 0x{payload[1]:02X}"
            f" (code 0x{payload[2]:02X})"
        )
    raise CanDecodeError(f"OBD-II service response 0x{service:02X} on 0x{can_id:03X} not decoded")


def _decode_pid(can_id: int, payload: bytes, time: datetime) -> SignalSample:
    if len(payload) < 2:
        raise CanDecodeError(f"mode 01 reply on 0x{can_id:03X} has no PID byte")
    pid = payload[1]
    entry = PIDS.get(pid)
    if entry is None:
        raise CanDecodeError(f"mode 01 PID 0x{pid:02X} on 0x{can_id:03X} is not decoded")
    key, size, convert = entry
    values = payload[2:]
    if len(values) < size:
        raise CanDecodeError(
            f"mode 01 PID 0x{pid:02X} on 0x{can_id:03X} needs {size} data bytes, has {len(values)}"
        )
    return SignalSample(key, float(convert(values)), time, f"obd2:{can_id:03X}:{pid:02X}")


def _decode_dtcs(can_id: int, payload: bytes, time: datetime) -> list[FaultCode]:
    service = payload[0]
    if len(payload) < 2:
        raise CanDecodeError(f"service 0x{service:02X} reply on 0x{can_id:03X} has no count byte")
    count = payload[1]
    pairs = payload[2:]
    if count * 2 > len(pairs):
        raise CanDecodeError(
            f"service 0x{service:02X} reply on 0x{can_id:03X} announces {count} codes but a"
            f" single frame carries {len(pairs) // 2}"
        )
    source = f"obd2:{can_id:03X}:{'stored' if service == SERVICE_03_RESPONSE else 'pending'}"
    faults = []
    for i in range(0, count * 2, 2):
        high, low = pairs[i], pairs[i + 1]
        if high == 0 and low == 0:
            continue
        code = dtc_to_string(high, low)
        faults.append(FaultCode(code, source, time, DTC_DESCRIPTIONS.get(code)))
    return faults
