"""Bad-input warnings that a flood of garbage cannot turn into a logging flood.

Every malformed frame is counted (``metrics.ERRORS``), but logging each one with its hex
cost a listener under a garbage flood nearly half its time. ``BadInputLog`` lets a burst
through (so one misbehaving unit's frames are all in the log), then at most ``per_second``
lines a second per protocol, and says how many it left out when it logs again.
"""

from __future__ import annotations

import logging
import time


class BadInputLog:
    def __init__(self, logger: logging.Logger, *, per_second: float = 5.0, burst: int = 20):
        self.logger = logger
        self.per_second = per_second
        self.burst = burst
        self._allowance: dict[str, float] = {}
        self._checked: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, protocol: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless this protocol's allowance is used up."""
        now = time.monotonic()
        allowance = self._allowance.get(protocol, float(self.burst))
        allowance = min(float(self.burst),
                        allowance + (now - self._checked.get(protocol, now)) * self.per_second)
        self._checked[protocol] = now
        if allowance < 1.0:
            self._allowance[protocol] = allowance
            self._suppressed[protocol] = self._suppressed.get(protocol, 0) + 1
            return
        self._allowance[protocol] = allowance - 1.0
        left_out = self._suppressed.pop(protocol, 0)
        if left_out:
            self.logger.warning("(%d more bad %s inputs not logged; all are counted in "
                                "fleetbook_ingest_errors_total)", left_out, protocol)
        self.logger.warning(message, *args)
