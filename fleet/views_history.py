"""History pages: a vehicle's replay and signal charts, and the reports.

Each page is rendered on the server and hands its ES module (``static/fleet/replay.js``,
``charts.js``, ``reports.js``) what it needs through ``data-`` attributes or
``json_script``, never an inline script, so ``script-src 'self'`` holds. The replay and
the charts fetch their data as JSON from a small view beside the page.

Every vehicle and driver is found through ``fleet.selectors`` for the person asking,
so another organisation's is a 404 on every page, data view and export. What may be
shown of private trips is decided in ``fleet.reports`` through ``logbook.selectors``.

Periods are given as ``from``/``to`` in the organisation's time zone: a date
(``2024-05-06``; as ``to`` it means the end of that day) or a local date and time
(``2024-05-06T08:30``); an explicit offset (``...Z``, ``+02:00``) is honoured.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from types import SimpleNamespace
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from fleet import reports
from fleet.api.renderers import PositionCsvRenderer, PositionGpxRenderer
from fleet.api.serializers import PositionSerializer
from fleet.models import Vehicle
from fleet.selectors import drivers_visible_to, membership_of, vehicles_visible_to
from fleet.views import _map_config

REPLAY_MAX_DAYS = 7
CHARTS_MAX_DAYS = 31
SPEED_FACTORS = (1, 10, 30, 60, 120, 300, 600)
DEFAULT_SPEED_FACTOR = 60


# --------------------------------------------------------------------------- periods


class BadPeriod(ValueError):
    pass


def parse_moment(text: str, zone: ZoneInfo, *, end: bool = False) -> datetime | None:
    """A ``from``/``to`` value: a local date (``to``: the end of that day), a local
    date and time, or one with an offset. None when empty; BadPeriod when unreadable."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), zone)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError as error:
        raise BadPeriod(f"{text!r} is not a date (2024-05-06) or a time "
                        "(2024-05-06T08:30).") from error
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    zone: ZoneInfo
    note: str = ""

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    def local(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M")

    @property
    def from_input(self) -> str:
        return self.local(self.start)

    @property
    def to_input(self) -> str:
        return self.local(self.end)

    def query(self, **extra: str) -> str:
        return urlencode({"from": self.from_input, "to": self.to_input, **extra})

    def shifted(self, direction: int) -> Window:
        step = self.span if self.span % timedelta(days=1) == timedelta(0) else timedelta(days=1)
        return Window(self.start + direction * step, self.end + direction * step, self.zone)

    @property
    def label(self) -> str:
        start, end = self.start.astimezone(self.zone), self.end.astimezone(self.zone)
        if start.time() == end.time() == time() and end - start == timedelta(days=1):
            return f"{start:%a %Y-%m-%d}"
        return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M}"


def day_window(day: date, zone: ZoneInfo) -> Window:
    return Window(datetime.combine(day, time(), zone),
                  datetime.combine(day + timedelta(days=1), time(), zone), zone)


def parse_window(params: QueryDict, zone: ZoneInfo, *, max_days: int,
                 strict: bool = False) -> Window:
    """The period asked for; by default today in ``zone``. A bad or too long period is
    corrected with a ``note`` for a page, or raises BadPeriod when ``strict``."""
    today = day_window(timezone.now().astimezone(zone).date(), zone)
    try:
        start = parse_moment(params.get("from", ""), zone)
        end = parse_moment(params.get("to", ""), zone, end=True)
        if start is None and end is None:
            return today
        if start is None:
            start = end - timedelta(days=1)
        if end is None:
            end = start + timedelta(days=1)
        if start >= end:
            raise BadPeriod("The period must end after it starts.")
    except BadPeriod as error:
        if strict:
            raise
        return Window(today.start, today.end, zone, note=f"{error} Showing today.")
    if end - start > timedelta(days=max_days):
        if strict:
            raise BadPeriod(f"At most {max_days} days at a time.")
        return Window(start, start + timedelta(days=max_days), zone,
                      note=f"At most {max_days} days at a time: the period was shortened.")
    return Window(start, end, zone)


# --------------------------------------------------------------------------- helpers


def _vehicle(request: HttpRequest, pk: int) -> Vehicle:
    """The vehicle if the user may see it, else 404 (another organisation's, or for a
    driver, one they do not drive)."""
    return get_object_or_404(
        vehicles_visible_to(request.user).select_related("organisation", "state"), pk=pk)


def _zone(vehicle: Vehicle) -> ZoneInfo:
    return ZoneInfo(vehicle.organisation.time_zone)


def _bad_request(error: Exception) -> JsonResponse:
    return JsonResponse({"detail": str(error)}, status=400)


def _history_links(vehicle: Vehicle, window: Window, page: str) -> dict[str, str]:
    base = reverse(page, args=[vehicle.pk])
    return {
        "previous": f"{base}?{window.shifted(-1).query()}",
        "next": f"{base}?{window.shifted(1).query()}",
        "today": base,
    }


def _last_fix_link(vehicle: Vehicle, window: Window, page: str) -> str:
    """A link to the day of the vehicle's last fix, when that is not in the window."""
    state = getattr(vehicle, "state", None)
    if state is None or state.fix_time is None or window.start <= state.fix_time < window.end:
        return ""
    day = day_window(state.fix_time.astimezone(window.zone).date(), window.zone)
    return f"{reverse(page, args=[vehicle.pk])}?{day.query()}"


# --------------------------------------------------------------------------- replay


@login_required
def replay(request: HttpRequest, pk: int) -> HttpResponse:
    """A vehicle's track for a period, coloured by speed, with play, slider and stops."""
    vehicle = _vehicle(request, pk)
    window = parse_window(request.GET, _zone(vehicle), max_days=REPLAY_MAX_DAYS)
    query = window.query()
    export = reverse("vehicle-replay-export", args=[vehicle.pk])
    bands = reports.SPEED_BANDS
    legend = [
        (i, f"{low}–{bands[i + 1]}" if i + 1 < len(bands) else f"{low}+")
        for i, low in enumerate(bands)
    ]
    return render(request, "fleet/replay.html", {
        "vehicle": vehicle,
        "window": window,
        "links": _history_links(vehicle, window, "vehicle-replay"),
        "last_fix_link": _last_fix_link(vehicle, window, "vehicle-replay"),
        "track_url": f"{reverse('vehicle-replay-track', args=[vehicle.pk])}?{query}",
        "gpx_url": f"{export}?{window.query(format='gpx')}",
        "csv_url": f"{export}?{window.query(format='csv')}",
        "legend": legend,
        "speed_factors": SPEED_FACTORS,
        "default_factor": DEFAULT_SPEED_FACTOR,
        "map": _map_config(request) | {"time_zone": vehicle.organisation.time_zone},
    })


@login_required
def replay_track(request: HttpRequest, pk: int) -> JsonResponse:
    """The replay's data: fixes (as columns), runs, stops and a summary."""
    vehicle = _vehicle(request, pk)
    try:
        window = parse_window(request.GET, _zone(vehicle), max_days=REPLAY_MAX_DAYS,
                              strict=True)
    except BadPeriod as error:
        return _bad_request(error)
    return JsonResponse(reports.replay_track(request.user, vehicle, window.start, window.end))


@login_required
def replay_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The replayed positions as GPX or CSV, with the API's renderers and columns.

    Not a link to the API's positions endpoint: this leaves out the positions of
    private trips the user may not follow, and holds the whole period in one file.
    """
    vehicle = _vehicle(request, pk)
    kind = request.GET.get("format", "gpx")
    renderers = {"gpx": PositionGpxRenderer, "csv": PositionCsvRenderer}
    if kind not in renderers:
        return _bad_request(ValueError("format is gpx or csv."))
    try:
        window = parse_window(request.GET, _zone(vehicle), max_days=REPLAY_MAX_DAYS,
                              strict=True)
    except BadPeriod as error:
        return _bad_request(error)
    rows = reports.visible_positions(request.user, vehicle, window.start, window.end)
    data = {"results": PositionSerializer(rows, many=True).data}
    renderer = renderers[kind]()
    body = renderer.render(data, renderer_context={
        "view": SimpleNamespace(gpx_track_name=lambda: vehicle.name)})
    response = HttpResponse(body, content_type=f"{renderer.media_type}; charset=utf-8")
    name = f"{slugify(vehicle.name) or 'vehicle'}_{window.from_input.replace(':', '')}"
    response["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
    return response


# --------------------------------------------------------------------------- charts


@login_required
def charts(request: HttpRequest, pk: int) -> HttpResponse:
    """Speed, fuel level, engine speed and coolant temperature over a period."""
    vehicle = _vehicle(request, pk)
    window = parse_window(request.GET, _zone(vehicle), max_days=CHARTS_MAX_DAYS)
    return render(request, "fleet/vehicle_charts.html", {
        "vehicle": vehicle,
        "window": window,
        "links": _history_links(vehicle, window, "vehicle-charts"),
        "last_fix_link": _last_fix_link(vehicle, window, "vehicle-charts"),
        "data_url": f"{reverse('vehicle-charts-data', args=[vehicle.pk])}?{window.query()}",
        "time_zone": vehicle.organisation.time_zone,
    })


@login_required
def charts_data(request: HttpRequest, pk: int) -> JsonResponse:
    vehicle = _vehicle(request, pk)
    try:
        window = parse_window(request.GET, _zone(vehicle), max_days=CHARTS_MAX_DAYS,
                              strict=True)
    except BadPeriod as error:
        return _bad_request(error)
    return JsonResponse({
        "vehicle": {"id": vehicle.pk, "name": vehicle.name},
        "from": window.start.timestamp(), "to": window.end.timestamp(),
        "time_zone": vehicle.organisation.time_zone,
        "series": reports.signal_series(request.user, vehicle, window.start, window.end),
    })


# --------------------------------------------------------------------------- reports


class ReportForm(forms.Form):
    type = forms.ChoiceField(label="Report", choices=list(reports.REPORT_TYPES.items()))
    subject = forms.ChoiceField(label="Vehicle or driver")
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, subjects: list[tuple[str, list[tuple[str, str]]]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["subject"].choices = subjects

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end:
            if end < start:
                self.add_error("end", "The period must end after it starts.")
            elif (end - start).days >= reports.MAX_REPORT_DAYS:
                self.add_error("end", f"At most {reports.MAX_REPORT_DAYS} days at a time.")
        return data


def _subject_choices(request: HttpRequest) -> list[tuple[str, list[tuple[str, str]]]]:
    vehicles = [(f"vehicle:{v.pk}", v.name) for v in
                vehicles_visible_to(request.user).order_by("name")]
    drivers = [(f"driver:{d.pk}", d.name) for d in
               drivers_visible_to(request.user).order_by("name")]
    return [(label, choices) for label, choices in (("Vehicles", vehicles),
                                                    ("Drivers", drivers)) if choices]


def _subject(request: HttpRequest, key: str) -> reports.Subject:
    """``vehicle:<id>`` or ``driver:<id>``, found through the selectors, else 404."""
    kind, _, pk = (key or "").partition(":")
    if not pk.isdigit() or len(pk) > 18:
        raise Http404("No such vehicle or driver.")
    if kind == "vehicle":
        return reports.Subject(vehicle=get_object_or_404(
            vehicles_visible_to(request.user).select_related("organisation"), pk=int(pk)))
    if kind == "driver":
        return reports.Subject(driver=get_object_or_404(
            drivers_visible_to(request.user).select_related("organisation"), pk=int(pk)))
    raise Http404("No such vehicle or driver.")


def _user_zone(request: HttpRequest) -> ZoneInfo:
    membership = membership_of(request.user)
    return ZoneInfo(membership.organisation.time_zone if membership else "UTC")


def _report_form(request: HttpRequest) -> tuple[ReportForm, reports.Report | None,
                                                 reports.Subject | None]:
    subjects = _subject_choices(request)
    today = timezone.now().astimezone(_user_zone(request)).date()
    first_subject = subjects[0][1][0][0] if subjects else ""
    params = request.GET.copy()
    defaults = {"type": "mileage", "subject": first_subject,
                "start": (today - timedelta(days=6)).isoformat(), "end": today.isoformat()}
    for name, value in defaults.items():
        if not params.get(name):
            params[name] = value
    subject = _subject(request, params["subject"]) if params["subject"] else None
    form = ReportForm(params, subjects=subjects)
    if subject is None or not form.is_valid():
        return form, None, subject
    data = form.cleaned_data
    report = reports.build_report(request.user, data["type"], subject, data["start"],
                                  data["end"])
    return form, report, subject


@login_required
def report_page(request: HttpRequest) -> HttpResponse:
    """``/reports/``: a report per vehicle or driver and period, as a table and a chart."""
    form, report, subject = _report_form(request)
    query = urlencode({name: form.data.get(name, "") for name in ("type", "subject",
                                                                   "start", "end")})
    export = reverse("reports-export")
    return render(request, "fleet/reports.html", {
        "form": form,
        "report": report,
        "subject": subject,
        "table": report.table() if report else [],
        "totals": report.totals_row() if report else None,
        "csv_url": f"{export}?{query}&format=csv",
        "xlsx_url": f"{export}?{query}&format=xlsx",
    })


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@login_required
def report_export(request: HttpRequest) -> HttpResponse:
    """The report as a CSV or XLSX download."""
    form, report, _ = _report_form(request)
    kind = request.GET.get("format", "csv")
    if kind not in ("csv", "xlsx"):
        return _bad_request(ValueError("format is csv or xlsx."))
    if report is None:
        return JsonResponse({"detail": form.errors.get_json_data()}, status=400)
    if kind == "csv":
        response = HttpResponse(reports.report_csv(report), content_type="text/csv; charset=utf-8")
    else:
        response = HttpResponse(reports.report_xlsx(report, exported_by=request.user.username),
                                content_type=XLSX_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{report.filename(kind)}"'
    return response
