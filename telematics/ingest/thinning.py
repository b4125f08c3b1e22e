"""Which signal samples are worth a row: a change that matters, or a heartbeat interval.

A CAN bus repeats engine speed ten times a second; storing each would make the signal
table the biggest in the database while telling nothing new. A sample is stored when it
differs from the last stored value of that vehicle's signal by at least the signal's
step, or when the last stored one is older than the interval, so charts keep their shape
and a flat line still has points. Counters (odometer, engine hours, fuel used) use small
steps so reports that difference them stay exact to that step.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from telematics.can import signals as s
from telematics.can.signals import SignalSample

STEPS: dict[str, float] = {
    s.VEHICLE_SPEED.key: 2.0,
    s.ENGINE_SPEED.key: 100.0,
    s.COOLANT_TEMPERATURE.key: 1.0,
    s.FUEL_LEVEL.key: 1.0,
    s.FUEL_RATE.key: 0.5,
    s.FUEL_USED_TOTAL.key: 0.5,
    s.THROTTLE.key: 5.0,
    s.ODOMETER.key: 0.1,
    s.ENGINE_HOURS.key: 0.05,
    s.AMBIENT_TEMPERATURE.key: 1.0,
    s.DISTANCE_SINCE_CODES_CLEARED.key: 1.0,
    s.MASS_AIR_FLOW.key: 2.0,
    s.ENGINE_LOAD.key: 5.0,
    s.INTAKE_AIR_TEMPERATURE.key: 1.0,
    s.ACCELERATOR_PEDAL.key: 5.0,
    s.FUEL_VOLUME.key: 1.0,
}
DEFAULT_STEP = 1.0


class SignalThinner:
    def __init__(self, interval: timedelta = timedelta(seconds=60)):
        self.interval = interval
        self._last: dict[tuple[int, str], tuple[datetime, float]] = {}

    def keep(self, vehicle_id: int, sample: SignalSample) -> bool:
        """True when the sample should be stored (and remember it as the last stored)."""
        if sample.time is None:
            return False
        key = (vehicle_id, sample.signal)
        last = self._last.get(key)
        if last is not None:
            last_time, last_value = last
            if sample.time <= last_time:
                return False  # older than what is stored: adds nothing to the series
            step = STEPS.get(sample.signal, DEFAULT_STEP)
            if abs(sample.value - last_value) < step and sample.time - last_time < self.interval:
                return False
        self._last[key] = (sample.time, sample.value)
        return True
