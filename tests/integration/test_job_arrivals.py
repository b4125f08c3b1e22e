"""Arrival and departure at job stops: the geometry, and fixes through the real listener."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from fleet.jobs import ARRIVE, DEPART, create_job, detect, stop_transition, track_fixes
from fleet.models import Job, JobStop
from telematics.models import Event
from telematics.simulator.encoders import fix_at
from tests.integration.conftest import TeltonikaUnit, track_jobs_now, wait_for
from tests.support import db

# One degree of latitude is about 111.2 km: 0.001° ≈ 111 m.
STOP = (52.5200, 13.4050)


def north_of_stop(metres: float) -> tuple[float, float]:
    return STOP[0] + metres / 111_195, STOP[1]


# --- pure geometry --------------------------------------------------------------------


@pytest.mark.parametrize(("at_stop", "distance", "expected"), [
    (False, 500.0, None),
    (False, 150.0, ARRIVE),     # on the radius counts as arrived
    (False, 10.0, ARRIVE),
    (True, 10.0, None),
    (True, 200.0, None),        # between radius and exit radius: jitter, nothing happens
    (True, 225.0, None),
    (True, 226.0, DEPART),      # beyond 1.5 × radius
    (False, 200.0, None),       # and coming back within it is not an arrival either
])
def test_stop_transition_has_hysteresis(at_stop, distance, expected):
    assert stop_transition(at_stop, distance, 150.0, 1.5) == expected


def test_an_exit_factor_below_one_cannot_remove_the_hysteresis():
    assert stop_transition(True, 149.0, 150.0, 0.5) is None
    assert stop_transition(True, 151.0, 150.0, 0.5) == DEPART


def test_detect_ignores_late_fixes_and_finished_stops():
    t = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    stop = JobStop(latitude=STOP[0], longitude=STOP[1], radius_m=100)
    assert detect(stop, t, *north_of_stop(50), 1.5) == ARRIVE
    stop.arrived_at = t
    assert detect(stop, t - timedelta(minutes=1), *north_of_stop(900), 1.5) is None
    assert detect(stop, t + timedelta(minutes=1), *north_of_stop(900), 1.5) == DEPART
    stop.departed_at = t + timedelta(minutes=1)
    assert detect(stop, t + timedelta(minutes=2), *north_of_stop(0), 1.5) is None
    assert detect(JobStop(address="no coordinates"), t, *STOP, 1.5) is None


def test_track_fixes_for_a_job_assigned_to_a_driver(fleets):
    """Without a vehicle, the vehicles the driver is default driver of report arrivals."""
    job = create_job(fleets.acme, title="By driver", driver=fleets.dana, stops=[
        {"latitude": STOP[0], "longitude": STOP[1], "radius_m": 100}])
    t = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert track_fixes({fleets.car.pk: [fix_at(*STOP, t)]}) == 0  # not dana's vehicle
    assert track_fixes({fleets.van.pk: [fix_at(*north_of_stop(5000), t),
                                        fix_at(*north_of_stop(30), t + timedelta(minutes=5))]}) == 2
    arrived = Event.objects.get(type="job_arrived")
    assert arrived.vehicle_id == fleets.van.pk and arrived.time == t + timedelta(minutes=5)
    assert arrived.attributes["job"] == job.pk and arrived.attributes["distance_m"] == 30.0
    assert Job.objects.get(pk=job.pk).status == "arrived"


# --- through the real ingest ----------------------------------------------------------

pytestmark_ingest = pytest.mark.django_db(transaction=True)


@pytestmark_ingest
async def test_arrival_and_departure_from_teltonika_fixes_over_tcp(dispatch_ingest, fleets):
    job = await db(lambda: create_job(fleets.acme, title="Two drops", vehicle=fleets.van,
                                      stops=[
        {"address": "Drop 1", "latitude": STOP[0], "longitude": STOP[1], "radius_m": 150},
        {"address": "Drop 2", "latitude": 52.53, "longitude": 13.42}]))
    first = await db(lambda: job.stops.get(sequence=1))
    await track_jobs_now(dispatch_ingest)
    unit = await TeltonikaUnit.connect(dispatch_ingest.ports["teltonika"],
                                       fleets.van_unit.identifier)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)

    def at(minutes: int, metres: float):
        return fix_at(*north_of_stop(metres), start + timedelta(minutes=minutes),
                      speed_kmh=30.0)

    await unit.send_fixes([at(0, 3000), at(3, 1500)])  # approaching
    await unit.send_fixes([at(6, 120)])  # inside the 150 m
    arrived = await wait_for(lambda: list(Event.objects.filter(type="job_arrived")))
    assert len(arrived) == 1
    assert arrived[0].attributes["stop"] == first.pk and arrived[0].attributes["sequence"] == 1
    assert arrived[0].time == start + timedelta(minutes=6)
    assert arrived[0].vehicle_id == fleets.van.pk
    assert arrived[0].organisation_id == fleets.acme.pk
    assert (await db(lambda: Job.objects.get(pk=job.pk))).status == "arrived"
    auto = await db(lambda: Event.objects.get(type="job_status"))
    assert (auto.attributes["from"], auto.attributes["to"], auto.attributes["by"]) == (
        "assigned", "arrived", "auto")

    # GPS jitter around the radius: no departure, no second arrival.
    await unit.send_fixes([at(8, 190), at(9, 140), at(10, 210)])
    await asyncio.to_thread(dispatch_ingest.pipeline.job_tracker.wait_idle, 5)
    assert await db(lambda: Event.objects.filter(type__startswith="job_").count()) == 2

    await unit.send_fixes([at(12, 400)])  # well out: departed, on to drop 2
    departed = await wait_for(lambda: list(Event.objects.filter(type="job_departed")))
    assert [e.time for e in departed] == [start + timedelta(minutes=12)]
    stop = await db(lambda: JobStop.objects.get(pk=first.pk))
    assert (stop.arrived_at, stop.departed_at) == (start + timedelta(minutes=6),
                                                   start + timedelta(minutes=12))
    assert (await db(lambda: Job.objects.get(pk=job.pk))).status == "en_route"
    unit.close()


@pytestmark_ingest
async def test_closed_jobs_are_not_tracked(dispatch_ingest, fleets):
    job = await db(lambda: create_job(fleets.acme, title="Cancelled", vehicle=fleets.van,
                                      stops=[{"latitude": STOP[0], "longitude": STOP[1]}]))
    await db(lambda: Job.objects.filter(pk=job.pk).update(status="failed"))
    await track_jobs_now(dispatch_ingest)
    assert dispatch_ingest.pipeline.job_tracker.tracked == frozenset()
    unit = await TeltonikaUnit.connect(dispatch_ingest.ports["teltonika"],
                                       fleets.van_unit.identifier)
    await unit.send_fixes([fix_at(*STOP, datetime.now(UTC) - timedelta(minutes=1))])
    await asyncio.to_thread(dispatch_ingest.pipeline.job_tracker.wait_idle, 5)
    assert await db(lambda: Event.objects.filter(type__startswith="job_").count()) == 0
    unit.close()
