"""A flood of bad frames is counted in full but logged only in measure."""

from __future__ import annotations

import logging

from telematics.ingest import logthrottle
from telematics.ingest.logthrottle import BadInputLog


def test_a_burst_is_logged_then_the_rest_are_summarised(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(logthrottle.time, "monotonic", lambda: clock[0])
    log = BadInputLog(logging.getLogger("test.bad_input"), per_second=2, burst=3)
    with caplog.at_level(logging.WARNING, logger="test.bad_input"):
        for number in range(10):
            log.warning("teltonika", "bad frame %d", number)
        # Another protocol has an allowance of its own.
        log.warning("gt06", "bad gt06 frame")
        clock[0] += 1.0  # two more lines allowed a second later
        log.warning("teltonika", "bad frame %d", 10)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "bad frame 0", "bad frame 1", "bad frame 2", "bad gt06 frame",
        "(7 more bad teltonika inputs not logged; all are counted in "
        "fleetbook_ingest_errors_total)",
        "bad frame 10",
    ]
