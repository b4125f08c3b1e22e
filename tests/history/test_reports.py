"""Report computations with exact figures, per role, and the pure helpers beneath them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fleet import reports
from fleet.reports import Fix, Subject, build_report
from tests.history.conftest import DAY, NEXT_DAY, SECRET, t

BERLIN = ZoneInfo("Europe/Berlin")
pytestmark = pytest.mark.django_db


def report(world, who: str, kind: str, first=DAY, last=DAY, *, driver: bool = False):
    subject = Subject(driver=world["alice_driver"]) if driver else Subject(vehicle=world["van"])
    return build_report(world[who], kind, subject, first, last,
                        now=datetime(2024, 6, 1, tzinfo=UTC))


def rows_by(report_, key: str) -> dict:
    return {row[key]: row for row in report_.rows}


# --------------------------------------------------------------------------- mileage


def test_daily_mileage_from_trips_with_a_fallback_to_positions(world):
    mileage = report(world, "desk", "mileage", DAY, DAY + timedelta(days=2))
    assert [(r["date"], r["distance_km"], r["trips"], r["source"]) for r in mileage.rows] == [
        (DAY, 25.0, 3, "logbook"),  # 6.0 + 12.5 (private: distance is visible) + 6.5
        (NEXT_DAY, 4.5, 0, "positions"),  # 15 odometer steps of 0.3 km
        (date(2024, 5, 8), 0.0, 0, ""),
    ]
    assert mileage.totals == {"distance_km": 29.5, "trips": 3}
    assert mileage.chart["labels"] == ["05-06", "05-07", "05-08"]
    assert mileage.chart["series"][0]["values"] == [25.0, 4.5, 0.0]


def test_driver_mileage_leaves_out_private_trips_the_viewer_may_not_see(world):
    by_dispatcher = report(world, "desk", "mileage", driver=True)
    assert by_dispatcher.rows[0]["distance_km"] == 12.5  # T1 + T3; T2 is not hers to them
    assert any("leaves out their private trips" in note for note in by_dispatcher.notes)
    by_herself = report(world, "alice", "mileage", driver=True)
    assert by_herself.rows[0]["distance_km"] == 25.0
    assert not any("leaves out" in note for note in by_herself.notes)


# --------------------------------------------------------------------------- idle


@pytest.mark.parametrize(("who", "ignition", "idle", "share", "periods"), [
    # Hidden from 07:10 to 12:00 for the dispatcher: T2's 30 min and 5 min of idling.
    ("desk", 600 + 600 + 1200, 600, 25.0, 1),
    ("boss", 600 + 600 + 1200, 600, 25.0, 1),
    ("alice", 600 + 600 + 1800 + 300 + 1200, 900, 20.0, 2),
])
def test_idle_time_is_ignition_on_at_rest(world, who, ignition, idle, share, periods):
    found = report(world, who, "idle").rows[0]
    assert found["ignition_s"] == ignition
    assert found["idle_s"] == idle
    assert found["idle_share"] == pytest.approx(share)
    assert found["periods"] == periods


# --------------------------------------------------------------------------- categories


def test_business_and_private_km(world):
    categories = report(world, "desk", "categories")
    assert {k: categories.rows[0][k] for k in ("business", "commute", "private",
                                               "unclassified", "total")} == {
        "business": 6.0, "commute": 6.5, "private": 12.5, "unclassified": 0.0, "total": 25.0}
    assert categories.chart["stacked"] is True
    assert [s["key"] for s in categories.chart["series"]] == [
        "business", "commute", "private", "unclassified"]


# --------------------------------------------------------------------------- trips


def test_trips_redact_the_private_one(world):
    trips = report(world, "desk", "trips")
    assert [row["distance_km"] for row in trips.rows] == [6.0, 12.5, 6.5]
    private = trips.rows[1]
    assert private["category"] == "Private" and private["date"] == DAY
    assert private["start_odometer_km"] == 1006.0 and private["end_odometer_km"] == 1018.5
    for hidden in ("start_time", "end_time", "start_address", "end_address", "driver",
                   "duration_s", "max_speed_kmh"):
        assert private[hidden] is None, hidden
    assert SECRET not in str(trips.rows) + str(trips.chart)
    assert trips.totals == {"distance_km": 25.0, "duration_s": 1800.0}  # T1 + T3 only
    own = report(world, "alice", "trips")
    assert own.rows[1]["end_address"] == SECRET and own.totals["duration_s"] == 3600.0


# --------------------------------------------------------------------------- stops


def test_stops_between_trips(world):
    end_of_day = datetime(2024, 5, 7, tzinfo=BERLIN)
    stops = report(world, "alice", "stops")
    assert [(r["start"], r["end"], r["duration_s"], r["place"]) for r in stops.rows] == [
        (t("07:10:00"), t("09:00:00"), 6600.0, "Schulz GmbH"),
        (t("09:30:00"), t("12:00:00"), 9000.0, SECRET),
        (t("12:20:00"), end_of_day, 34800.0, "Home street 1"),
    ]
    # The dispatcher: the stops on either side of the private trip would tell its times.
    seen = report(world, "desk", "stops")
    assert [(r["start"], r["duration_s"]) for r in seen.rows] == [(t("12:20:00"), 34800.0)]
    assert SECRET not in str(seen.rows)


def test_stops_from_positions_without_trips(world):
    # 2024-05-07 has no logbook trips, only the 08:00-08:07:30 UTC drive: the stops come
    # from the positions; after the drive the van is parked for the rest of the day.
    stops = report(world, "desk", "stops", NEXT_DAY, NEXT_DAY)
    assert any("computed from the positions" in note for note in stops.notes)
    end_of_day = datetime(2024, 5, 8, tzinfo=BERLIN)
    assert [(r["start"], r["end"]) for r in stops.rows] == [(t("08:07:30", 7), end_of_day)]
    assert stops.rows[0]["place"].count(",") == 1  # coordinates, no address


# --------------------------------------------------------------------------- events


def test_events_by_type(world):
    events = report(world, "desk", "events")
    assert [(r["type"], r["count"]) for r in events.rows] == [
        ("fault_opened", 2), ("service_due_soon", 1)]
    assert events.totals == {"count": 3}
    assert any("Events around private trips" in note for note in events.notes)
    own = report(world, "alice", "events")
    assert [(r["type"], r["count"]) for r in own.rows] == [
        ("fault_opened", 2), ("fault_closed", 1), ("service_due_soon", 1)]
    assert own.rows[0]["first"] == t("07:05:00") and own.rows[0]["last"] == t("13:00:00")
    # A driver's events: during her trips (T1's fault; T3 has none).
    assert [(r["type"], r["count"]) for r in report(world, "desk", "events",
                                                    driver=True).rows] == [("fault_opened", 1)]


# --------------------------------------------------------------------------- replay data


def test_replay_track_hides_the_private_trip_and_where_the_van_stood_after_it(world):
    track = reports.replay_track(world["desk"], world["van"], *day_bounds(DAY),
                                 now=datetime(2024, 6, 1, tzinfo=UTC))
    times = track["fixes"]["t"]
    hidden_from, hidden_to = t("07:10:00").timestamp(), t("12:00:00").timestamp()
    assert times and not any(hidden_from < x < hidden_to for x in times)
    assert hidden_from in times and hidden_to in times
    assert len(track["runs"]) == 2
    garden = world["g"]
    assert not any(abs(lat - garden[0]) < 1e-4 and abs(lon - garden[1]) < 1e-4 and x < hidden_to
                   for x, lat, lon in zip(times, track["fixes"]["lat"], track["fixes"]["lon"],
                                          strict=True))
    summary = track["summary"]
    assert summary["distance_km"] == 12.5 and summary["private_trips_hidden"] == 1
    assert summary["driving_s"] == 600 + 1200
    assert [(s["start"], s["duration_s"], s["open"]) for s in track["stops"]] == [
        (t("06:50:00").timestamp(), 600, False),
        (t("12:20:00").timestamp(), 34800, True),
    ]
    own = reports.replay_track(world["alice"], world["van"], *day_bounds(DAY),
                               now=datetime(2024, 6, 1, tzinfo=UTC))
    assert own["summary"]["distance_km"] == 25.0 and own["summary"]["private_trips_hidden"] == 0
    assert [s["duration_s"] for s in own["stops"]] == [600, 6600, 9000, 34800]
    assert len(own["runs"]) == 1


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, datetime.min.time(), BERLIN)
    return start, start + timedelta(days=1)


def test_signal_series_leave_out_the_private_trip(world):
    series = {s["key"]: s for s in reports.signal_series(world["desk"], world["van"],
                                                          *day_bounds(DAY))}
    coolant = series["coolant_temperature"]
    assert coolant["points"] == 3 and 88.0 not in coolant["v"]
    assert coolant["source"] == "CAN"
    speed = series["vehicle_speed"]
    assert speed["source"] == "GPS" and speed["points"] > 0
    assert series["fuel_level"]["points"] == 0 and series["fuel_level"]["t"] == []
    own = {s["key"]: s for s in reports.signal_series(world["alice"], world["van"],
                                                       *day_bounds(DAY))}
    assert own["coolant_temperature"]["points"] == 4
    assert own["vehicle_speed"]["points"] > speed["points"]


# --------------------------------------------------------------------------- pure helpers


def fix(at: str, lat=52.5, lon=13.4, speed=0.0, ignition=None, odometer=None) -> Fix:
    h, m, s = (int(x) for x in at.split(":"))
    return Fix(datetime(2024, 5, 6, h, m, s, tzinfo=UTC), lat, lon, speed, None, ignition,
               odometer)


def test_split_hidden_breaks_runs_at_hidden_periods():
    fixes = [fix("10:00:00"), fix("10:01:00"), fix("10:02:00"), fix("10:03:00"),
             fix("10:04:00")]
    hidden = [(t("10:01:00"), t("10:02:00")), (t("10:03:30"), t("10:03:40"))]
    runs = reports.split_hidden(fixes, hidden)
    assert [[f.time.minute for f in run] for run in runs] == [[0], [3], [4]]


def test_idle_split_at_local_midnight():
    # 21:50-22:10 UTC is 23:50-00:10 in Berlin: ten minutes on each day.
    late = [Fix(datetime(2024, 5, 6, 21, 50, tzinfo=UTC) + timedelta(minutes=k), 52.5, 13.4,
                0.0, None, True, None) for k in range(21)]
    days = reports.idle_by_day([late], BERLIN)
    assert days[DAY].idle_s == 600 and days[NEXT_DAY].idle_s == 600
    assert days[DAY].periods == 1 and NEXT_DAY not in {d for d, v in days.items() if v.periods}


def test_idle_ignores_long_silences_and_moving():
    fixes = [fix("10:00:00", ignition=True), fix("10:05:00", ignition=True),
             fix("10:30:00", ignition=True, speed=40), fix("10:31:00", ignition=False)]
    day = reports.idle_by_day([fixes], BERLIN)[DAY]
    assert day.idle_s == 300 and day.ignition_s == 300 + 60  # 10:05-10:30 is a silence


def test_gps_distance_ignores_parked_drift_and_jumps():
    drift = [fix("10:00:00", lat=52.5), fix("10:00:30", lat=52.50004),
             fix("10:01:00", lat=52.5)]
    assert reports.distance_by_day([drift], BERLIN, moving_kmh=5) == {}
    moving = [fix("10:00:00", lat=52.5, speed=36), fix("10:00:30", lat=52.5027, speed=36)]
    assert reports.distance_by_day([moving], BERLIN, moving_kmh=5)[DAY] == pytest.approx(
        0.3, abs=0.002)
    jump = [fix("10:00:00", lat=52.5, speed=36), fix("10:00:30", lat=53.5, speed=36)]
    assert reports.distance_by_day([jump], BERLIN, moving_kmh=5) == {}


def test_stop_through_a_silence_lasts_until_the_unit_wakes():
    fixes = [fix("18:00:00", speed=0), fix("18:00:30", speed=0),
             fix("23:00:00", lat=52.51, speed=40), fix("23:00:30", lat=52.52, speed=40)]
    (stop,) = reports.stops_from_fixes([fixes], min_s=300, stop_kmh=5, radius_m=100)
    assert (stop.start, stop.end) == (t("18:00:00"), t("23:00:00"))
    short = [fix("18:00:00", speed=0), fix("18:04:00", speed=0),
             fix("18:04:30", lat=52.51, speed=40)]
    assert reports.stops_from_fixes([short], min_s=300, stop_kmh=5, radius_m=100) == []


def test_formatting():
    assert reports.format_duration(59) == "59 s"
    assert reports.format_duration(65 * 60) == "1 h 05 min"
    assert reports.display("km", 12.345, BERLIN) == "12.3"
    assert reports.display("datetime", t("07:00:00"), BERLIN) == "2024-05-06 09:00"
    assert reports.display("text", None, BERLIN) == "—"


def test_a_report_refuses_a_bad_period(world):
    with pytest.raises(ValueError, match="ends before"):
        report(world, "desk", "trips", DAY, DAY - timedelta(days=1))
    with pytest.raises(ValueError, match="at most"):
        report(world, "desk", "trips", DAY, DAY + timedelta(days=200))
    with pytest.raises(ValueError, match="Unknown"):
        report(world, "desk", "nonsense")
