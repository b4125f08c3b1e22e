"""A vehicle's or a driver's history as reports, replay tracks and chart series.

Six reports over a period of days in the organisation's time zone, each a table with
a chart, downloadable as CSV and XLSX:

- ``trips``: the logbook's trips.
- ``stops``: parked periods of at least the logbook's ``parking_s`` (5 min): between
  logbook trips, or, for a vehicle without trips, computed from its positions.
- ``mileage``: km per day from the logbook's trips; a day without trips falls back to
  the positions (unit odometer where it reports one, else the GPS track while moving).
- ``idle``: ignition on and at rest (under ``IDLE_KMH``), from the positions, per day.
- ``categories``: business / commute / private / unclassified km per day, from the
  classified trips.
- ``events``: events (faults, service due, geofences...) counted by type.

Privacy is the logbook's (``logbook.selectors``): whoever may not see a private trip
(fleet managers, dispatchers; a driver, someone else's) gets of it only date, distance
and odometer. Here that means: its row in ``trips`` shows only those; no position,
stop, idle period, signal or event between the trips they may see before and after it
is shown or counted (``hidden_periods``: the vehicle parked after a private trip stands
at its destination); and in a *driver's* report a private trip the viewer may not see is
left out altogether, because who drove it is one of the things hidden.

The computations (``split_hidden``, ``stops_from_fixes``, ``stops_between_trips``,
``distance_by_day``, ``idle_by_day``) are pure functions over plain rows; only
``Subject``, ``visible_runs``, ``build_report`` and friends read the database, always
through the selectors for the person asking.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from django.utils import timezone

from fleet.models import Driver, Organisation, Vehicle
from fleet.selectors import Principal, actor_of, positions_of_vehicle
from logbook.models import Category
from logbook.selectors import (
    is_redacted_for,
    period_bounds,
    trip_view,
    trips_visible_to,
)
from logbook.tripstate import distance_m

# At rest with the ignition on: a standing vehicle's GPS reports a few km/h of noise.
IDLE_KMH = 3.0
# A silence longer than this is not counted as idling or as ignition time (the unit may
# have slept, or lost power): only what the unit reported is counted.
MAX_SAMPLE_GAP_S = 600.0
# Idle periods shorter than this are not counted as periods (their time still counts).
MIN_IDLE_PERIOD_S = 60.0
# A silence this long after the last fix at a stop counts to the stop: units sleep when
# parked, so the vehicle was there until the unit woke up and reported elsewhere.
STOP_SILENCE_S = 120.0
# Faster apparent movement between two fixes is a GPS jump, not distance.
MAX_SPEED_KMH = 250.0
# Longest period of a report, a replay and a chart (days).
MAX_REPORT_DAYS = 92

FIX_FIELDS = ("fix_time", "latitude", "longitude", "speed_kmh", "course", "ignition",
              "odometer_km")


class Fix(NamedTuple):
    """What the reports read of a stored position."""

    time: datetime
    latitude: float
    longitude: float
    speed_kmh: float | None = None
    course: float | None = None
    ignition: bool | None = None
    odometer_km: float | None = None


Period = tuple[datetime, datetime]


# --------------------------------------------------------------------------- positions


def split_hidden(fixes: Iterable[Fix], hidden: Sequence[Period]) -> list[list[Fix]]:
    """The fixes outside the hidden periods (both ends included in a period), as runs:
    a new run starts after each hidden period, so nothing is drawn, measured or bridged
    across one. ``fixes`` in time order."""
    periods = sorted(hidden)
    runs: list[list[Fix]] = []
    current: list[Fix] = []
    p = 0
    for fix in fixes:
        while p < len(periods) and periods[p][1] < fix.time:
            # A period that ended before this fix lies between it and the last kept one.
            if current:
                runs.append(current)
                current = []
            p += 1
        if p < len(periods) and periods[p][0] <= fix.time:
            if current:
                runs.append(current)
                current = []
            continue
        current.append(fix)
    if current:
        runs.append(current)
    return runs


_TICK = timedelta(microseconds=1)
FOREVER = datetime.max.replace(tzinfo=UTC)


def hidden_periods(principal: Principal, vehicle: Vehicle, start: datetime,
                   end: datetime) -> list[Period]:
    """Time ranges (inclusive) in which the vehicle's positions are hidden from the
    principal, among those overlapping [start, end).

    ``logbook.selectors.private_periods`` covers a private trip from its start to its
    end; but the fixes of the vehicle parked after it lie at its destination, and the
    last fixes parked before it tell when it started, both of which are hidden from
    whoever sees it redacted. So a run of consecutive trips redacted for the principal
    hides everything from the end of the trip before it to the start of the trip after
    it (both of which the principal sees); with no trip after it yet, until the trip in
    progress started, or for good.
    """
    from logbook.models import Trip, TripStatus, VehicleTripState

    active = Trip.objects.filter(vehicle=vehicle, status=TripStatus.ACTIVE).select_related(
        "driver", "organisation")
    inside = list(active.filter(start_time__lt=end, end_time__gt=start).order_by("start_time"))
    before = active.filter(end_time__lte=start).order_by("-end_time").first()
    after = active.filter(start_time__gte=end).order_by("start_time").first()
    trips = [t for t in (before, *inside, after) if t is not None]
    redacted = [is_redacted_for(trip, principal) for trip in trips]
    periods: list[Period] = []
    i = 0
    while i < len(trips):
        if not redacted[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(trips) and redacted[j + 1]:
            j += 1
        low = trips[i - 1].end_time + _TICK if i > 0 else trips[i].start_time
        if j + 1 < len(trips):
            high = trips[j + 1].start_time - _TICK
        else:
            state = VehicleTripState.objects.filter(vehicle=vehicle).first()
            driving = state.driving_since if state is not None else None
            high = driving - _TICK if driving and driving > trips[j].end_time else FOREVER
        if low < end and high >= start:
            periods.append((low, high))
        i = j + 1
    return periods


def visible_runs(
    principal: Principal, vehicle: Vehicle, start: datetime, end: datetime,
) -> tuple[list[list[Fix]], list[Period]]:
    """The vehicle's valid fixes in [start, end) the principal may see, as runs split
    where positions are hidden (``hidden_periods``), and those hidden periods."""
    hidden = hidden_periods(principal, vehicle, start, end)
    rows = (positions_of_vehicle(vehicle, start, end).filter(valid=True)
            .values_list(*FIX_FIELDS).iterator(chunk_size=5000))
    return split_hidden((Fix(*row) for row in rows), hidden), hidden


def fixes_in_windows(vehicle: Vehicle, windows: Sequence[Period]) -> list[list[Fix]]:
    """One run of valid fixes per window (each [start, end], inclusive), in one query."""
    windows = sorted(windows)
    if not windows:
        return []
    runs: list[list[Fix]] = [[] for _ in windows]
    starts = [w[0] for w in windows]
    rows = (positions_of_vehicle(vehicle, windows[0][0], max(w[1] for w in windows)
                                 + timedelta(microseconds=1))
            .filter(valid=True).values_list(*FIX_FIELDS).iterator(chunk_size=5000))
    for row in rows:
        fix = Fix(*row)
        i = bisect.bisect_right(starts, fix.time) - 1
        if i >= 0 and fix.time <= windows[i][1]:
            runs[i].append(fix)
    return [run for run in runs if run]


def thin(run: list[Fix], keep_every: int) -> list[Fix]:
    """Every ``keep_every``-th fix of a run, its first and last always kept."""
    if keep_every <= 1 or len(run) <= 2:
        return run
    kept = run[::keep_every]
    if kept[-1] is not run[-1]:
        kept.append(run[-1])
    return kept


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def step_km(a: Fix, b: Fix, *, moving_kmh: float) -> float:
    """Distance between two consecutive fixes: the unit's odometer where both report it,
    else the GPS distance when either fix is moving (a parked receiver's drift is not
    distance). A jump faster than ``MAX_SPEED_KMH`` counts nothing."""
    hours = max(_seconds(a.time, b.time), 1.0) / 3600.0
    if a.odometer_km is not None and b.odometer_km is not None:
        km = b.odometer_km - a.odometer_km
        return km if 0.0 <= km <= MAX_SPEED_KMH * hours + 0.1 else 0.0
    if max(a.speed_kmh or 0.0, b.speed_kmh or 0.0) < moving_kmh:
        return 0.0
    km = distance_m(a.latitude, a.longitude, b.latitude, b.longitude) / 1000.0
    return km if km <= MAX_SPEED_KMH * hours else 0.0


def distance_by_day(runs: Iterable[Sequence[Fix]], zone: ZoneInfo, *,
                    moving_kmh: float) -> dict[date, float]:
    """Km per local day (a step counts to the day it starts on)."""
    days: dict[date, float] = defaultdict(float)
    for run in runs:
        for a, b in pairwise(run):
            km = step_km(a, b, moving_kmh=moving_kmh)
            if km:
                days[a.time.astimezone(zone).date()] += km
    return dict(days)


def split_by_day(start: datetime, end: datetime, zone: ZoneInfo) -> Iterator[tuple[date, float]]:
    """[start, end) cut at local midnights: (day, seconds) pieces."""
    local = start.astimezone(zone)
    while start < end:
        midnight = datetime.combine(local.date() + timedelta(days=1), time(), zone)
        piece_end = min(end, midnight)
        yield local.date(), _seconds(start, piece_end)
        start, local = piece_end, piece_end.astimezone(zone)


@dataclass(slots=True)
class IdleDay:
    ignition_s: float = 0.0
    idle_s: float = 0.0
    periods: int = 0


def idle_by_day(runs: Iterable[Sequence[Fix]], zone: ZoneInfo, *, idle_kmh: float = IDLE_KMH,
                max_gap_s: float = MAX_SAMPLE_GAP_S,
                min_period_s: float = MIN_IDLE_PERIOD_S) -> dict[date, IdleDay]:
    """Ignition-on time and idle time (ignition on, speed under ``idle_kmh``) per local
    day. Each fix's state holds until the next fix, up to ``max_gap_s``; an idle period
    of at least ``min_period_s`` counts on the day it starts."""
    days: dict[date, IdleDay] = defaultdict(IdleDay)
    for run in runs:
        period_start: datetime | None = None
        period_s = 0.0
        for a, b in pairwise(run):
            seconds = _seconds(a.time, b.time)
            idle = False
            if a.ignition and seconds <= max_gap_s:
                idle = (a.speed_kmh or 0.0) < idle_kmh
                for day, piece in split_by_day(a.time, b.time, zone):
                    days[day].ignition_s += piece
                    if idle:
                        days[day].idle_s += piece
            if idle:
                if period_start is None:
                    period_start, period_s = a.time, 0.0
                period_s += seconds
            elif period_start is not None:
                if period_s >= min_period_s:
                    days[period_start.astimezone(zone).date()].periods += 1
                period_start = None
        if period_start is not None and period_s >= min_period_s:
            days[period_start.astimezone(zone).date()].periods += 1
    return dict(days)


# --------------------------------------------------------------------------- stops


@dataclass(slots=True)
class Stop:
    start: datetime
    end: datetime
    latitude: float | None
    longitude: float | None
    place: str = ""
    vehicle: str = ""
    open_end: bool = False  # still there when the data ends

    @property
    def duration_s(self) -> float:
        return _seconds(self.start, self.end)


def stops_from_fixes(
    runs: Sequence[Sequence[Fix]], *, min_s: float, stop_kmh: float, radius_m: float,
    silence_s: float = STOP_SILENCE_S, open_until: datetime | None = None,
) -> list[Stop]:
    """Parked periods of at least ``min_s``, from positions.

    A stop starts at a fix under ``stop_kmh`` and lasts while the following fixes stay
    within ``radius_m`` of it (drift and creeping stay inside). It ends at the last fix
    inside, or, when the unit fell silent after it for over ``silence_s``, at the next
    fix. A stop still going at the end of the last run lasts until ``open_until`` when
    given (the vehicle is still there, as far as anyone knows).
    """
    stops: list[Stop] = []
    for r, run in enumerate(runs):
        i, n = 0, len(run)
        while i < n:
            anchor = run[i]
            if (anchor.speed_kmh or 0.0) >= stop_kmh:
                i += 1
                continue
            j = i
            while j + 1 < n and distance_m(anchor.latitude, anchor.longitude,
                                           run[j + 1].latitude, run[j + 1].longitude) <= radius_m:
                j += 1
            open_end = False
            if j + 1 < n:
                silent = _seconds(run[j].time, run[j + 1].time) > silence_s
                end = run[j + 1].time if silent else run[j].time
            elif r == len(runs) - 1 and open_until is not None:
                end, open_end = max(run[j].time, open_until), True
            else:
                end = run[j].time
            if _seconds(anchor.time, end) >= min_s:
                stops.append(Stop(anchor.time, end, anchor.latitude, anchor.longitude,
                                  open_end=open_end))
            i = j + 1
    return stops


def stops_between_trips(
    views: Sequence[dict[str, Any]], start: datetime, end: datetime, *, min_s: float,
    now: datetime, only_after: set[int] | None = None,
) -> list[Stop]:
    """Parked periods between consecutive logbook trips (``trip_view`` dicts of one
    vehicle, oldest first; the trip before ``start`` included when there is one),
    clipped to [start, end). After the last trip the vehicle is parked until ``end`` (or
    now). A stop next to a trip whose times are hidden (``redacted``) is left out: it
    would tell when that trip started or ended. With ``only_after`` (trip ids), only the
    stops after those trips."""
    stops: list[Stop] = []
    until = min(end, now)
    for i, before in enumerate(views):
        after = views[i + 1] if i + 1 < len(views) else None
        if before["redacted"] or (after is not None and after["redacted"]):
            continue
        if only_after is not None and before["id"] not in only_after:
            continue
        stop_start = before["end_time"]
        stop_end = after["start_time"] if after is not None else until
        clipped_start, clipped_end = max(stop_start, start), min(stop_end, end)
        if clipped_end <= clipped_start or _seconds(stop_start, stop_end) < min_s:
            continue
        stops.append(Stop(
            clipped_start, clipped_end, before["end_latitude"], before["end_longitude"],
            place=before["end_address"] or "", vehicle=before["vehicle"],
            open_end=after is None,
        ))
    return stops


# --------------------------------------------------------------------------- reports

REPORT_TYPES: dict[str, str] = {
    "trips": "Trips",
    "stops": "Stops",
    "mileage": "Daily mileage",
    "idle": "Idle time",
    "categories": "Business / private km",
    "events": "Events",
}
CATEGORY_COLUMNS = (
    (Category.BUSINESS.value, "Business", "#0b6bcb"),
    (Category.COMMUTE.value, "Commute", "#1f9d55"),
    (Category.PRIVATE.value, "Private", "#a05cb8"),
    ("unclassified", "Unclassified", "#8c96a0"),
)
ACCENT = "#0b6bcb"


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. ``kind`` says how a value is shown and exported:

    text, date, datetime (aware; shown local), km (float), duration (seconds; exported
    as minutes), speed (km/h), percent, count.
    """

    key: str
    label: str
    kind: str = "text"

    @property
    def export_label(self) -> str:
        unit = {"km": " (km)", "duration": " (min)", "speed": " (km/h)", "percent": " (%)"}
        return self.label + unit.get(self.kind, "")

    @property
    def numeric(self) -> bool:
        return self.kind in ("km", "duration", "speed", "percent", "count")


@dataclass(slots=True)
class Report:
    kind: str
    subject: str
    first_day: date
    last_day: date
    zone: ZoneInfo
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] | None = None
    chart: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return REPORT_TYPES[self.kind]

    @property
    def period(self) -> str:
        if self.first_day == self.last_day:
            return self.first_day.isoformat()
        return f"{self.first_day.isoformat()} – {self.last_day.isoformat()}"

    def display(self, column: Column, value: Any) -> str:
        return display(column.kind, value, self.zone)

    def table(self) -> list[list[tuple[str, bool]]]:
        """Rows as (text, numeric) cells, for the page."""
        return [[(self.display(c, row.get(c.key)), c.numeric) for c in self.columns]
                for row in self.rows]

    def totals_row(self) -> list[tuple[str, bool]] | None:
        if self.totals is None:
            return None
        cells = []
        for i, column in enumerate(self.columns):
            if column.key in self.totals:
                cells.append((self.display(column, self.totals[column.key]), column.numeric))
            else:
                cells.append(("Total" if i == 0 else "", False))
        return cells

    def filename(self, extension: str) -> str:
        subject = "".join(c if c.isalnum() else "-" for c in self.subject.lower()).strip("-")
        days = self.first_day.isoformat() if self.first_day == self.last_day else \
            f"{self.first_day.isoformat()}_{self.last_day.isoformat()}"
        return f"{self.kind}_{subject or 'report'}_{days}.{extension}"


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def display(kind: str, value: Any, zone: ZoneInfo) -> str:
    """A value as the page shows it ("—" for a hidden or missing one)."""
    if value is None or value == "":
        return "—"
    if kind == "datetime":
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if kind == "date":
        return value.isoformat()
    if kind == "km":
        return f"{value:.1f}"
    if kind == "duration":
        return format_duration(value)
    if kind == "speed":
        return f"{value:.0f}"
    if kind == "percent":
        return f"{value:.1f} %"
    return str(value)


def export_value(kind: str, value: Any, zone: ZoneInfo) -> Any:
    """A value as CSV and XLSX hold it: numbers as numbers, times in the local zone."""
    if value is None or value == "":
        return None
    if kind == "datetime":
        return value.astimezone(zone).replace(tzinfo=None, microsecond=0)
    if kind in ("km", "percent"):
        return round(float(value), 1)
    if kind == "duration":
        return round(value / 60.0, 1)
    if kind == "speed":
        return round(float(value))
    return value


@dataclass(frozen=True, slots=True)
class Subject:
    """What a report is about: one vehicle or one driver, found through the selectors."""

    vehicle: Vehicle | None = None
    driver: Driver | None = None

    @property
    def organisation(self) -> Organisation:
        return (self.vehicle or self.driver).organisation  # type: ignore[union-attr]

    @property
    def label(self) -> str:
        return self.vehicle.name if self.vehicle is not None else self.driver.name  # type: ignore[union-attr]

    @property
    def key(self) -> str:
        return f"vehicle:{self.vehicle.pk}" if self.vehicle else f"driver:{self.driver.pk}"  # type: ignore[union-attr]


class _Context:
    """What the builders read, fetched once per report for the person asking."""

    def __init__(self, principal: Principal, subject: Subject, first_day: date,
                 last_day: date, now: datetime):
        from logbook.services import logbook_settings_for

        self.principal = principal
        self.subject = subject
        self.first_day, self.last_day = first_day, last_day
        self.days = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
        self.zone = ZoneInfo(subject.organisation.time_zone)
        self.start, self.end = period_bounds(subject.organisation, first_day, last_day)
        self.now = now
        self.settings = logbook_settings_for(subject.organisation)
        self._trips: list[tuple[Any, dict[str, Any]]] | None = None
        self.notes: list[str] = []

    @property
    def by_driver(self) -> bool:
        return self.subject.driver is not None

    def trips(self) -> list[tuple[Any, dict[str, Any]]]:
        """(trip, view) of the active trips starting in the period, oldest first."""
        if self._trips is None:
            if self.subject.vehicle is not None:
                trips = trips_visible_to(self.principal, vehicle=self.subject.vehicle,
                                         start=self.start, end=self.end, active_only=True)
            else:
                trips = trips_visible_to(self.principal, start=self.start, end=self.end,
                                         active_only=True).filter(driver=self.subject.driver)
            pairs = []
            for trip in trips.prefetch_related("corrects"):
                if self.by_driver and is_redacted_for(trip, self.principal):
                    continue  # not even counted: who drove it is hidden
                pairs.append((trip, trip_view(trip, self.principal, with_route=False)))
            if self.by_driver and self.subject.driver.user_id != getattr(
                    actor_of(self.principal).user, "pk", None):
                self.notes.append("A driver's report leaves out their private trips: who "
                                  "drove a private trip is not shown to you.")
            if any(view["redacted"] for _, view in pairs):
                self.notes.append("Private trips show only their date, distance and odometer; "
                                  "positions, stops, idling and events between the trips "
                                  "before and after them are left out.")
            self._trips = pairs
        return self._trips

    def views(self) -> list[dict[str, Any]]:
        return [view for _, view in self.trips()]

    def runs(self) -> list[list[Fix]]:
        """Fixes the report may use: a vehicle's visible positions in the period, or a
        driver's vehicles' positions during the driver's trips."""
        if self.subject.vehicle is not None:
            runs, _ = visible_runs(self.principal, self.subject.vehicle, self.start, self.end)
            return runs
        windows: dict[int, tuple[Vehicle, list[Period]]] = {}
        for trip, _ in self.trips():
            windows.setdefault(trip.vehicle_id, (trip.vehicle, []))[1].append(
                (trip.start_time, trip.end_time))
        runs = []
        for vehicle, periods in windows.values():
            runs.extend(fixes_in_windows(vehicle, periods))
        runs.sort(key=lambda run: run[0].time)
        return runs

    def local_date(self, view: dict[str, Any]) -> date:
        return date.fromisoformat(view["date"])


def _trips_report(ctx: _Context) -> Report:
    other = Column("vehicle", "Vehicle") if ctx.by_driver else Column("driver", "Driver")
    columns = [
        Column("date", "Date", "date"), Column("start_time", "Start", "datetime"),
        Column("end_time", "End", "datetime"), other,
        Column("start_address", "From"), Column("end_address", "To"),
        Column("distance_km", "Distance", "km"), Column("duration_s", "Duration", "duration"),
        Column("max_speed_kmh", "Max speed", "speed"), Column("category", "Category"),
        Column("start_odometer_km", "Odometer start", "km"),
        Column("end_odometer_km", "Odometer end", "km"),
    ]
    report = Report("trips", ctx.subject.label, ctx.first_day, ctx.last_day, ctx.zone, columns)
    labels, values = [], []
    for view in ctx.views():
        category = view["category"] or ""
        report.rows.append({
            **{c.key: view.get(c.key) for c in columns},
            "date": ctx.local_date(view),
            "category": dict(Category.choices).get(category, "Unclassified"),
        })
        start = view["start_time"]
        labels.append(start.astimezone(ctx.zone).strftime("%m-%d %H:%M") if start
                      else view["date"][5:] + " (private)")
        values.append(view["distance_km"])
    report.totals = {
        "distance_km": round(sum(row["distance_km"] for row in report.rows), 1),
        "duration_s": sum(row["duration_s"] or 0.0 for row in report.rows),
    }
    report.chart = _bar_chart(labels, [("distance_km", "Distance", values, ACCENT)], "km",
                              x_label="Trip")
    if not report.rows:
        report.notes.append("No trips in this period.")
    return report


def _stops_report(ctx: _Context) -> Report:
    columns = [Column("start", "Parked from", "datetime"), Column("end", "Until", "datetime"),
               Column("duration_s", "Duration", "duration"), Column("place", "Place")]
    if ctx.by_driver:
        columns.insert(3, Column("vehicle", "Vehicle"))
    report = Report("stops", ctx.subject.label, ctx.first_day, ctx.last_day, ctx.zone, columns)
    min_s = ctx.settings.parking_s
    stops: list[Stop] = []
    vehicles = ([ctx.subject.vehicle] if ctx.subject.vehicle is not None
                else sorted({trip.vehicle for trip, _ in ctx.trips()}, key=lambda v: v.name))
    own = {view["id"] for view in ctx.views()} if ctx.by_driver else None
    for vehicle in vehicles:
        # A stop lasts from a trip's end to the vehicle's next trip (for a driver's: by
        # whoever drove it), so the trips on either side of the period bound it too.
        views = _vehicle_views(ctx, vehicle)
        if any(ctx.start <= view["starts_at"] < ctx.end for view in views):
            stops += stops_between_trips(
                views, ctx.start, ctx.end, min_s=min_s, now=ctx.now, only_after=own)
        elif not ctx.by_driver:
            runs, hidden = visible_runs(ctx.principal, vehicle, ctx.start, ctx.end)
            last_fix = runs[-1][-1].time if runs else None
            still_there = last_fix is not None and not any(end > last_fix for _, end in hidden)
            stops += stops_from_fixes(
                runs, min_s=min_s, stop_kmh=ctx.settings.stop_speed_kmh,
                radius_m=ctx.settings.stop_radius_m,
                open_until=min(ctx.end, ctx.now) if still_there else None)
            if runs:
                report.notes.append("No logbook trips in this period: stops are computed "
                                    "from the positions.")
    for stop in stops:
        place = stop.place or (f"{stop.latitude:.5f}, {stop.longitude:.5f}"
                               if stop.latitude is not None else "")
        report.rows.append({"start": stop.start, "end": stop.end, "duration_s": stop.duration_s,
                            "place": place, "vehicle": stop.vehicle or ctx.subject.label})
    report.rows.sort(key=lambda row: row["start"])
    report.totals = {"duration_s": sum(row["duration_s"] for row in report.rows)}
    labels = [row["start"].astimezone(ctx.zone).strftime("%m-%d %H:%M") for row in report.rows]
    minutes = [round(row["duration_s"] / 60.0, 1) for row in report.rows]
    report.chart = _bar_chart(labels, [("duration_min", "Parked", minutes, "#3d6fb4")], "min",
                              x_label="Stop")
    report.notes.append(f"Stops of at least {format_duration(min_s)} (logbook setting "
                        "parking_s).")
    return report


def _vehicle_views(ctx: _Context, vehicle: Vehicle) -> list[dict[str, Any]]:
    """The vehicle's active trips in the period, with the last one before it and the
    first one after it, as views (plus ``id_start``: the start, for ordering only)."""
    visible = trips_visible_to(ctx.principal, vehicle=vehicle, active_only=True, lock=False)
    trips = [
        *visible.filter(start_time__lt=ctx.start).order_by("-start_time", "-id")[:1],
        *visible.filter(start_time__gte=ctx.start, start_time__lt=ctx.end),
        *visible.filter(start_time__gte=ctx.end)[:1],
    ]
    return [{**trip_view(trip, ctx.principal, with_route=False), "starts_at": trip.start_time}
            for trip in trips]


def _mileage_report(ctx: _Context) -> Report:
    columns = [Column("date", "Date", "date"), Column("distance_km", "Distance", "km"),
               Column("trips", "Trips", "count"), Column("source", "Source")]
    report = Report("mileage", ctx.subject.label, ctx.first_day, ctx.last_day, ctx.zone,
                    columns)
    km: dict[date, float] = defaultdict(float)
    count: Counter[date] = Counter()
    for view in ctx.views():
        day = ctx.local_date(view)
        km[day] += view["distance_km"]
        count[day] += 1
    fallback: dict[date, float] = {}
    missing = [day for day in ctx.days if not count[day]]
    if missing and not ctx.by_driver:
        for first, last in _ranges(missing):
            start, end = period_bounds(ctx.subject.organisation, first, last)
            runs, _ = visible_runs(ctx.principal, ctx.subject.vehicle, start, end)
            fallback.update(distance_by_day(runs, ctx.zone,
                                            moving_kmh=ctx.settings.stop_speed_kmh))
    for day in ctx.days:
        if count[day]:
            row = {"distance_km": round(km[day], 1), "trips": count[day], "source": "logbook"}
        elif fallback.get(day):
            row = {"distance_km": round(fallback[day], 1), "trips": 0, "source": "positions"}
        else:
            row = {"distance_km": 0.0, "trips": 0, "source": ""}
        report.rows.append({"date": day, **row})
    report.totals = {"distance_km": round(sum(r["distance_km"] for r in report.rows), 1),
                     "trips": sum(r["trips"] for r in report.rows)}
    report.chart = _bar_chart([d.isoformat()[5:] for d in ctx.days],
                              [("distance_km", "Distance", [r["distance_km"] for r in report.rows],
                                ACCENT)], "km")
    if fallback:
        report.notes.append("Days without logbook trips are measured from the positions "
                            "(the unit's odometer, else the GPS track while moving).")
    return report


def _ranges(days: Sequence[date]) -> Iterator[tuple[date, date]]:
    """Consecutive days as (first, last) ranges."""
    first = last = days[0]
    for day in days[1:]:
        if day == last + timedelta(days=1):
            last = day
            continue
        yield first, last
        first = last = day
    yield first, last


def _idle_report(ctx: _Context) -> Report:
    columns = [Column("date", "Date", "date"), Column("ignition_s", "Ignition on", "duration"),
               Column("idle_s", "Idling", "duration"),
               Column("idle_share", "Idle share", "percent"),
               Column("periods", "Idle periods", "count")]
    report = Report("idle", ctx.subject.label, ctx.first_day, ctx.last_day, ctx.zone, columns)
    if ctx.by_driver:
        ctx.trips()
    days = idle_by_day(ctx.runs(), ctx.zone)
    for day in ctx.days:
        found = days.get(day, IdleDay())
        share = 100.0 * found.idle_s / found.ignition_s if found.ignition_s else None
        report.rows.append({"date": day, "ignition_s": found.ignition_s, "idle_s": found.idle_s,
                            "idle_share": share, "periods": found.periods})
    ignition = sum(r["ignition_s"] for r in report.rows)
    idle = sum(r["idle_s"] for r in report.rows)
    report.totals = {"ignition_s": ignition, "idle_s": idle,
                     "idle_share": 100.0 * idle / ignition if ignition else None,
                     "periods": sum(r["periods"] for r in report.rows)}
    report.chart = _bar_chart(
        [d.isoformat()[5:] for d in ctx.days],
        [("idle_min", "Idling", [round(r["idle_s"] / 60.0, 1) for r in report.rows], "#e8a317")],
        "min")
    report.notes.append(f"Idling: ignition on and under {IDLE_KMH:g} km/h. Silences over "
                        f"{MAX_SAMPLE_GAP_S / 60:g} min are not counted; periods from "
                        f"{MIN_IDLE_PERIOD_S:g} s.")
    if ctx.by_driver:
        report.notes.append("For a driver: during their trips only.")
    return report


def _categories_report(ctx: _Context) -> Report:
    columns = [Column("date", "Date", "date"),
               *(Column(key, label, "km") for key, label, _ in CATEGORY_COLUMNS),
               Column("total", "Total", "km")]
    report = Report("categories", ctx.subject.label, ctx.first_day, ctx.last_day, ctx.zone,
                    columns)
    by_day: dict[date, dict[str, float]] = {
        day: dict.fromkeys([key for key, _, _ in CATEGORY_COLUMNS], 0.0) for day in ctx.days}
    for view in ctx.views():
        key = view["category"] or "unclassified"
        by_day[ctx.local_date(view)][key] += view["distance_km"]
    for day in ctx.days:
        row: dict[str, Any] = {"date": day, **{k: round(v, 1) for k, v in by_day[day].items()}}
        row["total"] = round(sum(by_day[day].values()), 1)
        report.rows.append(row)
    report.totals = {key: round(sum(r[key] for r in report.rows), 1)
                     for key in [c.key for c in columns[1:]]}
    report.chart = _bar_chart(
        [d.isoformat()[5:] for d in ctx.days],
        [(key, label, [r[key] for r in report.rows], colour)
         for key, label, colour in CATEGORY_COLUMNS], "km", stacked=True)
    return report


def event_label(kind: str) -> str:
    return kind.replace("_", " ").capitalize()


def _events_report(ctx: _Context) -> Report:
    from telematics.models import Event

    columns = [Column("type", "Type"), Column("label", "Event"), Column("count", "Count", "count"),
               Column("first", "First", "datetime"), Column("last", "Last", "datetime")]
    report = Report("events", ctx.subject.label, ctx.first_day, ctx.last_day, ctx.zone, columns)
    times: dict[str, list[datetime]] = defaultdict(list)
    if ctx.subject.vehicle is not None:
        vehicle = ctx.subject.vehicle
        hidden = hidden_periods(ctx.principal, vehicle, ctx.start, ctx.end)
        events = Event.objects.filter(vehicle=vehicle, time__gte=ctx.start, time__lt=ctx.end)
        for kind, moment in events.values_list("type", "time"):
            if not any(a <= moment <= b for a, b in hidden):
                times[kind].append(moment)
        if hidden:
            report.notes.append("Events around private trips (while the positions are "
                                "hidden) are not counted.")
    else:
        windows: dict[int, list[Period]] = defaultdict(list)
        for trip, _ in ctx.trips():
            windows[trip.vehicle_id].append((trip.start_time, trip.end_time))
        for vehicle_id, periods in windows.items():
            events = Event.objects.filter(vehicle_id=vehicle_id, time__gte=ctx.start,
                                          time__lt=ctx.end)
            for kind, moment in events.values_list("type", "time"):
                if any(a <= moment <= b for a, b in periods):
                    times[kind].append(moment)
        report.notes.append("For a driver: events of their vehicles during their trips.")
    for kind in sorted(times, key=lambda k: (-len(times[k]), k)):
        report.rows.append({"type": kind, "label": event_label(kind), "count": len(times[kind]),
                            "first": min(times[kind]), "last": max(times[kind])})
    report.totals = {"count": sum(r["count"] for r in report.rows)}
    report.chart = _bar_chart([r["label"] for r in report.rows],
                              [("count", "Events", [r["count"] for r in report.rows], "#d64545")],
                              "", x_label="Type")
    if not report.rows:
        report.notes.append("No events in this period.")
    return report


def _bar_chart(labels: list[str], series: list[tuple[str, str, list[float], str]], unit: str,
               *, stacked: bool = False, x_label: str = "Day") -> dict[str, Any]:
    return {
        "labels": labels, "x_label": x_label, "unit": unit, "stacked": stacked,
        "series": [{"key": key, "label": label, "values": values, "color": colour}
                   for key, label, values, colour in series],
    }


BUILDERS = {
    "trips": _trips_report, "stops": _stops_report, "mileage": _mileage_report,
    "idle": _idle_report, "categories": _categories_report, "events": _events_report,
}


def build_report(principal: Principal, kind: str, subject: Subject, first_day: date,
                 last_day: date, *, now: datetime | None = None) -> Report:
    """The report ``kind`` on ``subject`` for the days [first_day, last_day] (local).

    ``subject`` must come from the selectors for ``principal`` (the views find it with
    ``vehicles_visible_to`` / ``drivers_visible_to``); everything else is read here
    through the logbook's and the fleet's selectors for the same principal.
    """
    if kind not in BUILDERS:
        raise ValueError(f"Unknown report {kind!r}")
    if last_day < first_day:
        raise ValueError("The period ends before it starts.")
    if (last_day - first_day).days >= MAX_REPORT_DAYS:
        raise ValueError(f"A report covers at most {MAX_REPORT_DAYS} days.")
    ctx = _Context(principal, subject, first_day, last_day, now or timezone.now())
    report = BUILDERS[kind](ctx)
    report.notes = [*ctx.notes, *report.notes]
    return report


# --------------------------------------------------------------------------- exports


def report_csv(report: Report) -> str:
    """The table as CSV: one header row, the rows, a Total row; times local, durations
    in minutes, distances in km."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.export_label for c in report.columns])
    for row in [*report.rows, *([report.totals] if report.totals is not None else [])]:
        cells = []
        for i, column in enumerate(report.columns):
            value = export_value(column.kind, row.get(column.key), report.zone)
            if row is report.totals and i == 0:
                value = "Total"
            if isinstance(value, datetime):
                value = value.strftime("%Y-%m-%d %H:%M:%S")
            elif isinstance(value, date):
                value = value.isoformat()
            cells.append("" if value is None else value)
        writer.writerow(cells)
    return out.getvalue()


XLSX_FORMATS = {"date": "yyyy-mm-dd", "datetime": "yyyy-mm-dd hh:mm", "km": "0.0",
                "duration": "0.0", "percent": "0.0", "speed": "0", "count": "0"}


def report_xlsx(report: Report, *, exported_by: str = "", now: datetime | None = None) -> bytes:
    """The table as an Excel workbook: sheet "Report" (header, rows, Total, a bar chart)
    and sheet "About" (what, whom, which period, notes)."""
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, Reference
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    book = Workbook()
    sheet = book.active
    sheet.title = "Report"
    sheet.append([c.export_label for c in report.columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in report.rows:
        sheet.append([export_value(c.kind, row.get(c.key), report.zone) for c in report.columns])
    last_data_row = sheet.max_row
    if report.totals is not None:
        values = [export_value(c.kind, report.totals.get(c.key), report.zone)
                  for c in report.columns]
        values[0] = "Total"
        sheet.append(values)
        for cell in sheet[sheet.max_row]:
            cell.font = Font(bold=True)
    for index, column in enumerate(report.columns, start=1):
        letter = get_column_letter(index)
        if column.kind in XLSX_FORMATS:
            for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                cell.number_format = XLSX_FORMATS[column.kind]
        width = max([len(column.export_label)] + [
            len(report.display(column, row.get(column.key))) for row in report.rows[:500]])
        sheet.column_dimensions[letter].width = min(60, max(10, width + 2))
    sheet.freeze_panes = "A2"
    if report.rows:
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(report.columns))}{last_data_row}"
    keys = [c.key for c in report.columns]
    chart_columns = [keys.index(s["key"]) + 1 for s in report.chart.get("series", [])
                     if s["key"] in keys and report.rows]
    if chart_columns:
        chart = BarChart()
        chart.type = "col"
        chart.title = report.title
        chart.y_axis.title = report.chart.get("unit") or None
        if report.chart.get("stacked"):
            chart.grouping = "stacked"
            chart.overlap = 100
        for col in chart_columns:
            chart.add_data(Reference(sheet, min_col=col, min_row=1, max_row=last_data_row),
                           titles_from_data=True)
        chart.set_categories(Reference(sheet, min_col=1, min_row=2, max_row=last_data_row))
        chart.width, chart.height = 24, 10
        sheet.add_chart(chart, f"{get_column_letter(len(report.columns) + 2)}2")
    about = book.create_sheet("About")
    moment = (now or timezone.now()).astimezone(report.zone).replace(tzinfo=None, microsecond=0)
    for line in (("Report", report.title), ("Subject", report.subject),
                 ("From", report.first_day), ("To", report.last_day),
                 ("Time zone", str(report.zone)), ("Exported", moment),
                 ("Exported by", exported_by), *(("Note", note) for note in report.notes)):
        about.append(list(line))
    for (cell,) in about.iter_rows(min_col=1, max_col=1):
        cell.font = Font(bold=True)
    for name in ("B3", "B4"):
        about[name].number_format = "yyyy-mm-dd"
    about["B6"].number_format = "yyyy-mm-dd hh:mm"
    about.column_dimensions["A"].width = 14
    about.column_dimensions["B"].width = 80
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# --------------------------------------------------------------------------- replay

# Lower bounds (km/h) of the speed bands a track is coloured by; the colours are the
# CSS custom properties --speed-0 ... --speed-6 (static/fleet/history.css).
SPEED_BANDS = (0, 10, 30, 50, 70, 90, 110)
# A replay draws at most this many fixes; longer tracks keep every n-th fix.
MAX_TRACK_FIXES = 60_000


def speed_band(kmh: float | None) -> int:
    return max(0, bisect.bisect_right(SPEED_BANDS, kmh or 0.0) - 1)


def replay_track(principal: Principal, vehicle: Vehicle, start: datetime, end: datetime, *,
                 now: datetime | None = None) -> dict[str, Any]:
    """A vehicle's track in [start, end) for the replay page, as columns of numbers.

    Only what the principal may see: fixes inside private trips they may not follow are
    left out and the track breaks there (``runs`` lists the index where each unbroken
    run starts). Stops are computed from the same fixes.
    """
    from logbook.services import logbook_settings_for

    settings = logbook_settings_for(vehicle.organisation_id)
    now = now or timezone.now()
    runs, hidden = visible_runs(principal, vehicle, start, end)
    total = sum(len(run) for run in runs)
    keep_every = -(-total // MAX_TRACK_FIXES) if total > MAX_TRACK_FIXES else 1
    last_fix = runs[-1][-1].time if runs else None
    still_there = last_fix is not None and not any(b > last_fix for _, b in hidden)
    stops = stops_from_fixes(
        runs, min_s=settings.parking_s, stop_kmh=settings.stop_speed_kmh,
        radius_m=settings.stop_radius_m, open_until=min(end, now) if still_there else None)
    columns: dict[str, list[Any]] = {k: [] for k in ("t", "lat", "lon", "speed", "course",
                                                     "ignition")}
    starts: list[int] = []
    distance = driving = 0.0
    top = 0.0
    for run in runs:
        starts.append(len(columns["t"]))
        for fix in thin(run, keep_every):
            columns["t"].append(round(fix.time.timestamp(), 3))
            columns["lat"].append(round(fix.latitude, 6))
            columns["lon"].append(round(fix.longitude, 6))
            columns["speed"].append(None if fix.speed_kmh is None else round(fix.speed_kmh, 1))
            columns["course"].append(None if fix.course is None else round(fix.course))
            columns["ignition"].append(fix.ignition)
        for a, b in pairwise(run):
            distance += step_km(a, b, moving_kmh=settings.stop_speed_kmh)
            seconds = _seconds(a.time, b.time)
            if seconds <= MAX_SAMPLE_GAP_S and (a.speed_kmh or 0.0) >= settings.stop_speed_kmh:
                driving += seconds  # each fix's speed holds until the next, as for idling
        top = max([top, *(fix.speed_kmh or 0.0 for fix in run)])
    return {
        "vehicle": {"id": vehicle.pk, "name": vehicle.name},
        "from": start.timestamp(), "to": end.timestamp(),
        "time_zone": vehicle.organisation.time_zone,
        "fixes": columns, "runs": starts,
        "stops": [{"start": s.start.timestamp(), "end": s.end.timestamp(),
                   "lat": round(s.latitude, 6), "lon": round(s.longitude, 6),
                   "duration_s": round(s.duration_s), "open": s.open_end} for s in stops],
        "summary": {
            "fixes": total, "drawn": len(columns["t"]), "distance_km": round(distance, 1),
            "driving_s": round(driving), "max_speed_kmh": round(top),
            "stops": len(stops), "private_trips_hidden": len(hidden),
        },
        "speed_bands": list(SPEED_BANDS),
    }


def visible_positions(principal: Principal, vehicle: Vehicle, start: datetime,
                      end: datetime) -> list:
    """The vehicle's stored positions in [start, end) the principal may see (as model
    objects, for the API's serializer and CSV/GPX renderers)."""
    hidden = hidden_periods(principal, vehicle, start, end)
    rows = []
    for position in positions_of_vehicle(vehicle, start, end).iterator(chunk_size=5000):
        if not any(a <= position.fix_time <= b for a, b in hidden):
            rows.append(position)
    return rows


# --------------------------------------------------------------------------- charts

# The signals the vehicle page charts: (key, fallback). Speed falls back to the GPS.
CHART_SIGNALS = ("vehicle_speed", "fuel_level", "engine_speed", "coolant_temperature")
# Samples further apart than this are not joined by a line (thinned signals are stored
# at least once a minute while the vehicle reports).
CHART_GAP_S = 300.0
MAX_CHART_POINTS = 20_000


def _series_points(runs: Iterable[Sequence[tuple[datetime, float | None]]]) -> tuple[list, list]:
    """Runs of (time, value) as uPlot columns (epoch seconds, values), with a null
    between runs and across silences so the line breaks there."""
    times: list[float] = []
    values: list[float | None] = []
    for run in runs:
        previous: datetime | None = None
        for moment, value in run:
            if previous is not None and _seconds(previous, moment) > CHART_GAP_S:
                times.append(round(previous.timestamp() + 1, 3))
                values.append(None)
            times.append(round(moment.timestamp(), 3))
            values.append(None if value is None else round(value, 2))
            previous = moment
        if times and values[-1] is not None:
            times.append(round(times[-1] + 0.001, 3))
            values.append(None)
    return times, values


def signal_series(principal: Principal, vehicle: Vehicle, start: datetime,
                  end: datetime) -> list[dict[str, Any]]:
    """Speed, fuel level, engine speed and coolant temperature of the vehicle in
    [start, end), as the principal may see them (nothing during private trips they may
    not follow). Speed is the CAN's where the vehicle reports it, else the GPS's."""
    from telematics.can.signals import SIGNALS
    from telematics.models import SignalSample

    hidden = hidden_periods(principal, vehicle, start, end)
    series = []
    for key in CHART_SIGNALS:
        signal = SIGNALS[key]
        samples = (SignalSample.objects.filter(vehicle=vehicle, signal=key, time__gte=start,
                                               time__lt=end)
                   .order_by("time").values_list("time", "value"))
        points = [Fix(moment, 0.0, 0.0, value) for moment, value in samples]
        source = "CAN"
        if not points and key == "vehicle_speed":
            runs, _ = visible_runs(principal, vehicle, start, end)
            source = "GPS"
        else:
            runs = split_hidden(points, hidden)
        count = sum(len(run) for run in runs)
        keep_every = -(-count // MAX_CHART_POINTS) if count > MAX_CHART_POINTS else 1
        times, values = _series_points(
            [(fix.time, fix.speed_kmh) for fix in thin(run, keep_every)] for run in runs)
        series.append({"key": key, "label": signal.label, "unit": signal.unit,
                       "source": source if count else "", "points": count,
                       "t": times, "v": values})
    return series
