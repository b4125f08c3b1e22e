"""The vehicle signals Fleetbook keeps, and the records every CAN decoder returns.

Every decoder in this package (OBD-II, J1939, DBC, Teltonika IO) maps what it reads
onto ONE list of canonical signals, so a fuel report does not care whether the litres
came from a truck's J1939 bus, a van's OBD port or a Teltonika CAN adapter. A signal is
named exactly once, here; decoders refer to the constants (``VEHICLE_SPEED.key``), never
to a string literal of their own, so a typo is an import error rather than a silent
new signal.

Units are the platform's: km/h, rpm, degC, %, L/h, L, km, h, g/s, s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Signal:
    """A canonical vehicle signal: stable key, human label and unit.

    ``decimals`` is how precisely a page shows a reading: engine speed to the rpm, the
    odometer to 100 m; more digits than the source resolves would only look precise.
    """

    key: str
    label: str
    unit: str
    decimals: int = 1


# Core signals every fleet report uses.
VEHICLE_SPEED = Signal("vehicle_speed", "Vehicle speed", "km/h", 0)
ENGINE_SPEED = Signal("engine_speed", "Engine speed", "rpm", 0)
COOLANT_TEMPERATURE = Signal("coolant_temperature", "Engine coolant temperature", "°C", 0)
FUEL_LEVEL = Signal("fuel_level", "Fuel level", "%", 0)
FUEL_RATE = Signal("fuel_rate", "Fuel rate", "L/h")
FUEL_USED_TOTAL = Signal("fuel_used_total", "Total fuel used", "L")
THROTTLE = Signal("throttle", "Throttle position", "%", 0)
ODOMETER = Signal("odometer", "Odometer", "km")
ENGINE_HOURS = Signal("engine_hours", "Engine hours", "h")
AMBIENT_TEMPERATURE = Signal("ambient_temperature", "Ambient air temperature", "°C")
DISTANCE_SINCE_CODES_CLEARED = Signal(
    "distance_since_codes_cleared", "Distance since fault codes cleared", "km"
)
MASS_AIR_FLOW = Signal("mass_air_flow", "Mass air flow", "g/s")
ENGINE_LOAD = Signal("engine_load", "Calculated engine load", "%", 0)
INTAKE_AIR_TEMPERATURE = Signal("intake_air_temperature", "Intake air temperature", "°C", 0)

# Signals a source reports that have no core equivalent; kept apart rather than forced
# onto a core signal whose meaning differs (pedal is not throttle plate, litres are not %).
ENGINE_RUN_TIME = Signal("engine_run_time", "Run time since engine start", "s", 0)
DISTANCE_WITH_MIL_ON = Signal("distance_with_mil_on", "Distance travelled with MIL on", "km")
ACCELERATOR_PEDAL = Signal("accelerator_pedal", "Accelerator pedal position", "%", 0)
FUEL_VOLUME = Signal("fuel_volume", "Fuel in tank", "L")
ODOMETER_COUNTED = Signal(
    "odometer_counted", "Distance counted by the CAN adapter since installation", "km"
)
FUEL_USED_COUNTED = Signal(
    "fuel_used_counted", "Fuel used counted by the CAN adapter since installation", "L"
)

SIGNALS: dict[str, Signal] = {
    signal.key: signal
    for signal in (
        VEHICLE_SPEED,
        ENGINE_SPEED,
        COOLANT_TEMPERATURE,
        FUEL_LEVEL,
        FUEL_RATE,
        FUEL_USED_TOTAL,
        THROTTLE,
        ODOMETER,
        ENGINE_HOURS,
        AMBIENT_TEMPERATURE,
        DISTANCE_SINCE_CODES_CLEARED,
        MASS_AIR_FLOW,
        ENGINE_LOAD,
        INTAKE_AIR_TEMPERATURE,
        ENGINE_RUN_TIME,
        DISTANCE_WITH_MIL_ON,
        ACCELERATOR_PEDAL,
        FUEL_VOLUME,
        ODOMETER_COUNTED,
        FUEL_USED_COUNTED,
    )
}


@dataclass(frozen=True, slots=True)
class LatestValue:
    """A vehicle's newest value of one signal, as a page shows it."""

    signal: Signal
    value: float
    time: datetime | None
    source: str


def latest_values(state_signals: dict | None) -> list[LatestValue]:
    """The latest values kept on a vehicle's state (``{"key": {"value", "time", ...}}``),
    in the catalogue's order so every vehicle's page lists them alike.

    A key the catalogue no longer has, or an entry without a number, is left out rather
    than shown half-understood; a time that does not parse is shown as unknown.
    """
    values = []
    for key, signal in SIGNALS.items():
        entry = (state_signals or {}).get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), int | float):
            continue
        try:
            time = datetime.fromisoformat(entry["time"]) if entry.get("time") else None
        except (TypeError, ValueError):
            time = None
        values.append(LatestValue(signal, float(entry["value"]), time,
                                  str(entry.get("source", ""))))
    return values


@dataclass(frozen=True, slots=True)
class SignalSample:
    """One value of one canonical signal.

    ``time`` is the CAN frame's (or IO record's) own aware UTC timestamp, ``None`` when
    the source had none. ``source`` says where it came from (``"j1939:EEC1:00"``,
    ``"obd2:7E8:0C"``, ``"dbc:speed.EngineRPM"``, ``"teltonika:io85"``) so two sources
    of the same signal can be told apart.
    """

    signal: str
    value: float
    time: datetime | None
    source: str


@dataclass(frozen=True, slots=True)
class FaultCode:
    """One diagnostic trouble code reported by a vehicle.

    OBD-II codes use ``code`` only (``"P0104"``). J1939 DM1 codes fill ``spn``, ``fmi``,
    ``occurrence`` and ``conversion_method`` and carry the sender's lamp states
    (``True`` on, ``False`` off, ``None`` error/not available); their ``code`` is
    ``"SPN<spn>-FMI<fmi>"``.
    """

    code: str
    source: str
    time: datetime | None = None
    description: str | None = None
    spn: int | None = None
    fmi: int | None = None
    occurrence: int | None = None
    conversion_method: int | None = None
    mil_lamp: bool | None = None
    red_stop_lamp: bool | None = None
    amber_warning_lamp: bool | None = None
    protect_lamp: bool | None = None
