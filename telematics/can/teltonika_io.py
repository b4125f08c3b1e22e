"""Teltonika FMB/FMC IO elements that carry vehicle CAN data, as canonical signals.

A Teltonika unit with an LV-CAN200/ALL-CAN300 adapter or CAN chip reads the bus itself
and sends finished values as AVL IO elements; the Teltonika decoder stores them as
``{"io81": 52, ...}``. This table maps the ones whose id, size and multiplier could be
confirmed onto canonical signals.

Sources:

- [WIKI] wiki.teltonika-gps.com, "FMB150/FMC150 Teltonika Data Sending Parameters ID",
  section "CAN adapters elements" / "CAN I/O standard elements" (revision diffs 97787-98112,
  86605, 94132-98113, 100989, firmware FMB.Ver.03.28.07.Rev.152+):
  81 Vehicle Speed, 1 B unsigned 0-255, km/h; 82 Accelerator Pedal Position, 1 B 0-102, %;
  83 Fuel Consumed, 4 B, multiplier 0.1, l; 84 Fuel Level, 2 B, multiplier 0.1, l;
  105 Total Mileage (counted), 4 B, m; 115 Engine Coolant Temperature, 2 B signed -600..1270,
  multiplier 0.1, degC.
- [FMA110] Teltonika FMA110 user manual, table 9.1 "Acquired LV-CAN200 parameters IO ID"
  (manualslib 3038465, p.101): 85 Engine RPM, 2 B, 0-8200 rpm; 87 Vehicle Distance, 4 B,
  0-2145000000 meters; 89 Fuel Level [%], 1 B, 0-100 %. A Teltonika manual rather than the
  wiki, for an older LV-CAN200 firmware; same ids on the FMB wiki's CAN list.

Left out because they could not be confirmed in this work (the brief listed them):
OBD elements 30 (number of DTC), 31 (engine load), 32 (coolant), 36 (rpm), 37 (speed),
48 (fuel level), 389 (total mileage); CAN elements 102/103 (engine worktime, counted),
107 (fuel consumed counted), 110 (fuel rate). Add them here once their rows are checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from telematics.can.signals import (
    ACCELERATOR_PEDAL,
    COOLANT_TEMPERATURE,
    ENGINE_SPEED,
    FUEL_LEVEL,
    FUEL_USED_TOTAL,
    FUEL_VOLUME,
    ODOMETER,
    ODOMETER_COUNTED,
    VEHICLE_SPEED,
    SignalSample,
)


@dataclass(frozen=True, slots=True)
class IoElement:
    """How one IO element becomes a canonical value: ``raw * multiplier``.

    ``signed_bytes`` is set for signed elements: the unit sends two's complement, and a
    decoder that stored the raw bytes unsigned gets the sign restored here.
    """

    signal: str
    multiplier: float
    source: str  # [WIKI] or [FMA110], see module docstring
    signed_bytes: int = 0


IO_ELEMENTS: dict[int, IoElement] = {
    81: IoElement(VEHICLE_SPEED.key, 1.0, "WIKI"),
    82: IoElement(ACCELERATOR_PEDAL.key, 1.0, "WIKI"),
    83: IoElement(FUEL_USED_TOTAL.key, 0.1, "WIKI"),
    84: IoElement(FUEL_VOLUME.key, 0.1, "WIKI"),
    85: IoElement(ENGINE_SPEED.key, 1.0, "FMA110"),
    87: IoElement(ODOMETER.key, 0.001, "FMA110"),  # metres -> km
    89: IoElement(FUEL_LEVEL.key, 1.0, "FMA110"),
    105: IoElement(ODOMETER_COUNTED.key, 0.001, "WIKI"),  # metres -> km
    115: IoElement(COOLANT_TEMPERATURE.key, 0.1, "WIKI", signed_bytes=2),
}


def signals_from_io(io: dict[str, int], time: datetime | None) -> list[SignalSample]:
    """Canonical samples from a record's IO elements (keys ``"io<ID>"``).

    Unknown ids and non-integer values are ignored: the record carries many IO elements
    (GSM signal, voltages...) that are not vehicle CAN data.
    """
    samples = []
    for key, raw in io.items():
        if not key.startswith("io") or isinstance(raw, bool) or not isinstance(raw, int):
            continue
        try:
            element = IO_ELEMENTS.get(int(key[2:]))
        except ValueError:
            continue
        if element is None:
            continue
        if element.signed_bytes:
            bits = 8 * element.signed_bytes
            if raw >= 1 << (bits - 1) and raw < 1 << bits:
                raw -= 1 << bits
        value = round(raw * element.multiplier, 6)
        samples.append(SignalSample(element.signal, value, time, f"teltonika:{key}"))
    return samples
