"""The logbook's pages: mobile-first for the driver, an overview for fleet managers.

Drivers see their trips of today and those still to classify, classify one with a tap
(the suggestion) or several at once, edit within the window, choose the vehicle they
drive today and are reminded of trips about to lock. Fleet managers and dispatchers see
every vehicle's logbook and what it lacks (unclassified trips, odometer gaps), and the
manager explains gaps. On a trip's page its driver or the fleet manager corrects it
within the window (cancel with a reason, split at a pause or a time, merge with the trip
before or after); corrected trips stay listed, struck through, linked to what replaced
them. Everything is read through ``logbook.selectors`` (privacy) and changed through
``logbook.services`` (revisions, window, who may correct); plain forms, no inline script.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from functools import wraps
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from fleet.models import Driver, Role
from fleet.selectors import Actor, actor_of, membership_of
from logbook.exports import export_csv, export_pdf
from logbook.models import Category, DriverSession, Interface, Trip, TripStatus
from logbook.selectors import (
    completeness_for,
    logbook_vehicles_for,
    odometer_gaps_visible_to,
    period_bounds,
    redacted_q,
    revisions_of,
    trip_view,
    trips_visible_to,
    vehicles_to_choose,
)
from logbook.services import (
    LogbookError,
    assign_driver,
    can_edit,
    cancel_trip,
    classify,
    confirm_suggestions,
    correction_blocker,
    correction_refusal,
    edit_deadline,
    explain_gap,
    is_editable,
    logbook_settings_for,
    merge_partners,
    merge_trips,
    missing_fields,
    pauses_in,
    split_trip,
    suggest_category,
)

REMIND_WITHIN = timedelta(hours=24)
LIST_PAGE_SIZE = 100
CATEGORY_LABELS = dict(Category.choices)


# --------------------------------------------------------------------------- helpers


def _zone(request: HttpRequest) -> ZoneInfo:
    membership = membership_of(request.user)
    return ZoneInfo(membership.organisation.time_zone if membership else "UTC")


def logbook_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Logged in, with times shown in the organisation's zone."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        timezone.activate(_zone(request))
        try:
            return view(request, *args, **kwargs)
        finally:
            timezone.deactivate()

    return wrapped


def _is_driver(actor: Actor) -> bool:
    return actor.role == Role.DRIVER and not actor.is_superuser


def _is_manager(actor: Actor) -> bool:
    return actor.is_superuser or actor.role in (Role.ADMIN, Role.DISPATCHER)


def _driver_of(request: HttpRequest) -> Driver | None:
    return Driver.objects.filter(user=request.user).first()


def _next_url(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return default


class PeriodForm(forms.Form):
    start = forms.DateField(required=False, label="From")
    end = forms.DateField(required=False, label="To")

    def period(self, today: date, default_days: int) -> tuple[date, date]:
        data = self.cleaned_data if self.is_valid() else {}
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=default_days - 1)
        if start > end:
            start, end = end, start
        return start, end


class ClassifyForm(forms.Form):
    category = forms.ChoiceField(choices=Category.choices)
    purpose = forms.CharField(max_length=300, required=False)
    partner = forms.CharField(max_length=300, required=False, label="Business partner")
    destination = forms.CharField(max_length=300, required=False)
    note = forms.CharField(max_length=300, required=False)


class GapForm(forms.Form):
    note = forms.CharField(max_length=300)


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=300, error_messages={
        "required": "Say why the trip is cancelled."})


class SplitForm(forms.Form):
    """Where to split: ``split`` is a pause's route point, or "time" with ``time``."""

    split = forms.RegexField(r"^(time|[0-9]{1,9})$", error_messages={
        "required": "Choose a stop or a time to split at.",
        "invalid": "Choose a stop or a time to split at."})
    time = forms.TimeField(required=False, error_messages={
        "invalid": "Give the time as hours and minutes, e.g. 10:05."})
    reason = forms.CharField(max_length=300, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("split") == "time" and data.get("time") is None \
                and "time" not in self.errors:
            self.add_error("time", "Give the time to split at.")
        return data


class MergeForm(forms.Form):
    neighbour = forms.IntegerField(min_value=1, max_value=2**63 - 1, error_messages={
        "required": "Choose the trip to merge with.", "invalid": "Choose the trip to merge with."})
    reason = forms.CharField(max_length=300, required=False)


def _with_corrections(trips: QuerySet[Trip]) -> QuerySet[Trip]:
    """Trips with what they replace and what replaced them, for a list in few queries."""
    return trips.prefetch_related("corrects", Prefetch(
        "corrected_by", queryset=Trip.objects.select_related(
            "vehicle", "driver", "organisation").prefetch_related("corrects")))


def _replacements(trip: Trip, request: HttpRequest) -> list[dict[str, Any]]:
    """The trips that replaced this one that the person may open, as they may see them
    (a merge with a private trip is hidden like one; a driver sees only their own)."""
    actor = actor_of(request.user)
    found = []
    for other in sorted(trip.corrected_by.all(), key=lambda t: (t.start_time, t.pk)):
        if other.organisation_id != actor.organisation_id and not actor.is_superuser:
            continue
        if _is_driver(actor) and (other.driver_id is None
                                  or other.driver.user_id != request.user.pk):
            continue
        found.append({"pk": other.pk, "view": trip_view(other, request.user, with_route=False)})
    return found


def _card(trip: Trip, request: HttpRequest, now: datetime, settings_=None) -> dict[str, Any]:
    """A trip as the pages show it: the view for the user, plus what the driver can do."""
    view = trip_view(trip, request.user, with_route=False)
    settings_ = settings_ or logbook_settings_for(trip.organisation_id)
    editable = (
        not view["redacted"] and trip.status == TripStatus.ACTIVE
        and is_editable(trip, settings_, now) and can_edit(trip, request.user)
    )
    card: dict[str, Any] = {
        "trip": trip, "view": view, "editable": editable,
        # What replaced a corrected trip, each as the person may see it (a merge with a
        # private trip is hidden like one); prefetched by ``_with_corrections``.
        "replacements": [] if view["redacted"] or trip.status == TripStatus.ACTIVE else
        _replacements(trip, request),
        "category_label": CATEGORY_LABELS.get(view["category"] or "", "Unclassified"),
        "deadline": None, "locks_soon": False, "suggestion": None, "one_tap": False,
    }
    if editable:
        deadline = edit_deadline(trip, settings_)
        card["deadline"] = deadline
        card["locks_soon"] = deadline - now <= REMIND_WITHIN
        if not trip.category:
            suggestion = suggest_category(trip, settings_)
            card["suggestion"] = suggestion
            card["suggestion_label"] = CATEGORY_LABELS[suggestion.category]
            card["one_tap"] = not missing_fields(suggestion.category, {
                "purpose": suggestion.purpose, "partner": suggestion.partner,
                "destination": suggestion.destination, "note": suggestion.note})
    return card


def _form_values(card: dict[str, Any]) -> dict[str, str]:
    """What the classification form starts with: the trip's values, else the suggestion."""
    trip, suggestion = card["trip"], card.get("suggestion")
    if trip.category or suggestion is None:
        return {"category": trip.category, "purpose": trip.purpose, "partner": trip.partner,
                "destination": trip.destination or trip.end_address, "note": trip.note}
    return {"category": suggestion.category, "purpose": suggestion.purpose,
            "partner": suggestion.partner,
            "destination": suggestion.destination or trip.end_address,
            "note": suggestion.note}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _map_config() -> dict[str, str]:
    return {"tile_url": settings.MAP_TILE_URL,
            "tile_attribution": getattr(settings, "MAP_TILE_ATTRIBUTION", "")}


# --------------------------------------------------------------------------- home


@logbook_page
def home(request: HttpRequest) -> HttpResponse:
    actor = actor_of(request.user)
    if _is_driver(actor):
        return _driver_home(request)
    if _is_manager(actor):
        return _manager_home(request)
    raise PermissionDenied("Your login belongs to no organisation.")


def _driver_home(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    zone = _zone(request)
    driver = _driver_of(request)
    organisation = membership_of(request.user).organisation
    settings_ = logbook_settings_for(organisation)
    today = now.astimezone(zone).date()
    start, end = period_bounds(organisation, today, today)
    visible = _with_corrections(trips_visible_to(request.user))
    today_cards = [_card(t, request, now, settings_)
                   for t in visible.filter(start_time__gte=start, start_time__lt=end,
                                           status=TripStatus.ACTIVE)]
    open_cards = [_card(t, request, now, settings_)
                  for t in visible.filter(status=TripStatus.ACTIVE, category="",
                                          locked_at__isnull=True).select_related(
                                              "start_place", "end_place")]
    open_cards = [c for c in open_cards if c["editable"]]
    for card in open_cards:
        card["form"] = _form_values(card)
    session = None
    if driver is not None:
        session = (DriverSession.objects.filter(driver=driver, since__lte=now)
                   .filter(until__isnull=True).select_related("vehicle").first())
    return render(request, "logbook/driver_home.html", {
        "driver": driver,
        "today": today,
        "today_cards": today_cards,
        "open_cards": open_cards,
        "locking": [c for c in open_cards if c["locks_soon"]],
        "window_days": settings_.edit_window_days,
        "session": session,
        "vehicles": vehicles_to_choose(request.user),
        "categories": Category.choices,
    })


def _manager_home(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    zone = _zone(request)
    period = PeriodForm(request.GET or None)
    start_day, end_day = period.period(now.astimezone(zone).date(), 30)
    start = datetime.combine(start_day, datetime.min.time(), zone)
    end = datetime.combine(end_day + timedelta(days=1), datetime.min.time(), zone)
    rows = completeness_for(request.user, start, end, now)
    totals = {key: sum(row[key] for row in rows)
              for key in ("trips", "unclassified", "locking_soon", "open_gaps")}
    totals["km"] = round(sum(row["km"] for row in rows), 1)
    totals["gap_km"] = round(sum(row["gap_km"] for row in rows), 1)
    return render(request, "logbook/manager_home.html", {
        "rows": rows, "totals": totals, "start": start_day, "end": end_day,
    })


# --------------------------------------------------------------------------- trips


_CATEGORY_FILTERS = [("", "All"), ("unclassified", "Unclassified"), *Category.choices]


@logbook_page
def trip_list(request: HttpRequest) -> HttpResponse:
    """A user's trips in a period: a driver's own (to classify several at once), every
    visible trip for managers, optionally of one vehicle and category."""
    now = timezone.now()
    zone = _zone(request)
    period = PeriodForm(request.GET or None)
    start_day, end_day = period.period(now.astimezone(zone).date(), 14)
    start = datetime.combine(start_day, datetime.min.time(), zone)
    end = datetime.combine(end_day + timedelta(days=1), datetime.min.time(), zone)
    trips = trips_visible_to(request.user, start=start, end=end)
    vehicle_id = request.GET.get("vehicle", "")
    if re.fullmatch(r"[0-9]{1,18}", vehicle_id):
        trips = trips.filter(vehicle_id=int(vehicle_id))
    category = request.GET.get("category", "")
    redacted = redacted_q(request.user)
    if category == "unclassified":  # as the trips show it: a redacted one shows private
        trips = trips.filter(category="").exclude(redacted)
    elif category == Category.PRIVATE:
        trips = trips.filter(Q(category=Category.PRIVATE) | (Q(category="") & redacted))
    elif category in Category.values:
        trips = trips.filter(category=category)
    page = Paginator(_with_corrections(trips), LIST_PAGE_SIZE).get_page(
        request.GET.get("page"))
    settings_by_organisation: dict[int, Any] = {}
    cards = []
    for trip in page:
        if trip.organisation_id not in settings_by_organisation:
            settings_by_organisation[trip.organisation_id] = logbook_settings_for(
                trip.organisation_id)
        cards.append(_card(trip, request, now, settings_by_organisation[trip.organisation_id]))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "logbook/trip_list.html", {
        "cards": cards, "page": page, "query": query.urlencode(),
        "start": start_day, "end": end_day,
        "vehicles": logbook_vehicles_for(request.user), "vehicle_id": vehicle_id,
        "category": category, "category_filters": _CATEGORY_FILTERS,
        "categories": Category.choices,
        "any_editable": any(c["editable"] for c in cards),
        "is_driver": _is_driver(actor_of(request.user)),
    })


def _visible_trip(request: HttpRequest, pk: int) -> Trip:
    return get_object_or_404(
        _with_corrections(trips_visible_to(request.user).select_related(
            "start_place", "end_place")), pk=pk)


def _corrections(request: HttpRequest, trip: Trip, view: dict[str, Any], settings_: Any,
                 now: datetime) -> dict[str, Any]:
    """What the trip page offers to correct, and what replaced the trip.

    Only what the services would accept is offered (``merge_partners`` is the rule
    itself), so a tap never meets a refusal; a dispatcher sees no form at all, and a
    locked or corrected trip says why at the top of its page.
    """
    refusal = correction_refusal(trip, request.user)
    blocker = None if refusal else correction_blocker(trip, settings_, now)
    allowed = refusal is None and blocker is None
    pauses = pauses_in(trip.route, settings_.stop_radius_m) if allowed else []
    zone = ZoneInfo(trip.organisation.time_zone)
    return {
        "allowed": allowed,
        "pauses": [{"pause": p, "duration": _duration(p.duration_s)} for p in pauses],
        "merge": [{"direction": direction, "trip": other,
                   "view": trip_view(other, request.user, with_route=False)}
                  for direction, other in (merge_partners(trip, request.user, now)
                                           if allowed else [])],
        "start_local": trip.start_time.astimezone(zone),
        "end_local": trip.end_time.astimezone(zone),
        # Each replacement as the person may see it: a replacement can be private when
        # the original was not (merged with a private trip).
        "replaced_by": [] if view["redacted"] else _replacements(trip, request),
    }


def _trip_page(request: HttpRequest, trip: Trip, *, form: dict[str, str] | None = None,
               errors: dict[str, str] | None = None, status: int = 200,
               correction: str = "", correction_values: dict[str, str] | None = None,
               correction_errors: dict[str, str] | None = None) -> HttpResponse:
    now = timezone.now()
    card = _card(trip, request, now)
    view = trip_view(trip, request.user)
    route = [[point[1], point[2]] for point in view["route"] or []]
    settings_ = logbook_settings_for(trip.organisation_id)
    correction_errors = correction_errors or {}
    return render(request, "logbook/trip_detail.html", {
        "card": card, "view": view, "trip": trip,
        "route": route, "route_json": json.dumps(route),
        "duration": _duration(view["duration_s"]),
        "map": _map_config(),
        "revisions": revisions_of(trip, request.user),
        "form": form or _form_values(card),
        "errors": {k: v for k, v in (errors or {}).items() if k != "__all__"},
        "refused": (errors or {}).get("__all__"),
        "categories": Category.choices,
        "deadline": edit_deadline(trip, settings_),
        "window_days": settings_.edit_window_days,
        "corrections": _corrections(request, trip, view, settings_, now),
        # What this trip replaces, oldest first (a merge of A and B reads in that order).
        "replaces": [] if view["redacted"] else [
            t.pk for t in sorted(trip.corrects.all(), key=lambda t: (t.start_time, t.pk))],
        # Which correction form to show open, with what the person typed and why it failed.
        "correction": correction,
        "correction_values": correction_values or {},
        "correction_errors": {k: v for k, v in correction_errors.items() if k != "__all__"},
        "correction_refused": correction_errors.get("__all__"),
    }, status=status)


@logbook_page
def trip_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _trip_page(request, _visible_trip(request, pk))


def _classify_values(request: HttpRequest) -> tuple[ClassifyForm, dict[str, str]]:
    form = ClassifyForm(request.POST)
    values = {name: request.POST.get(name, "")[:300] for name in
              ("category", "purpose", "partner", "destination", "note")}
    return form, values


def _flat(error: LogbookError) -> list[str]:
    return [text for fields in error.messages_by_trip.values() for text in fields.values()]


@require_POST
@logbook_page
def classify_trip(request: HttpRequest, pk: int) -> HttpResponse:
    """One trip, from its card or its page; a refusal shows the page with the reason."""
    trip = _visible_trip(request, pk)
    form, values = _classify_values(request)
    if not form.is_valid():
        errors = {name: " ".join(text) for name, text in form.errors.items()}
        return _trip_page(request, trip, form=values, errors=errors, status=400)
    data = form.cleaned_data
    try:
        classify([trip], data["category"], purpose=data["purpose"], partner=data["partner"],
                 destination=data["destination"], note=data["note"], actor=request.user,
                 interface=Interface.WEB)
    except PermissionDenied:
        return _trip_page(request, trip, form=values, status=403, errors={
            "__all__": "This trip is not yours to classify."})
    except LogbookError as error:
        problems = error.messages_by_trip.get(trip.pk, {})
        status = 409 if "__all__" in problems else 400
        return _trip_page(request, trip, form=values, errors=problems, status=status)
    messages.success(request, _done_text([trip], data["category"]))
    return redirect(_next_url(request, reverse("logbook:home")))


def _done_text(trips: list[Trip], category: str) -> str:
    label = CATEGORY_LABELS[category].lower()
    if len(trips) == 1:
        trip = trips[0]
        when = timezone.localtime(trip.start_time).strftime("%d.%m. %H:%M")
        return f"Saved: the trip of {when} is {label}."
    return f"Saved: {len(trips)} trips are {label}."


@require_POST
@logbook_page
def confirm_trip(request: HttpRequest, pk: int) -> HttpResponse:
    """The one tap: take the rules' suggestion as the trip's classification."""
    trip = _visible_trip(request, pk)
    try:
        (done,) = confirm_suggestions([trip], actor=request.user, interface=Interface.WEB)
    except PermissionDenied:
        messages.error(request, "This trip is not yours to classify.")
    except LogbookError as error:
        for text in _flat(error):
            messages.error(request, text)
    else:
        messages.success(request, _done_text([done], done.category))
    return redirect(_next_url(request, reverse("logbook:home")))


@require_POST
@logbook_page
def classify_many(request: HttpRequest) -> HttpResponse:
    """Several trips at once, all or none (``logbook.services.classify``)."""
    back = _next_url(request, reverse("logbook:trips"))
    ids = [int(i) for i in request.POST.getlist("trip") if re.fullmatch(r"[0-9]{1,18}", i)]
    trips = list(trips_visible_to(request.user).filter(pk__in=ids))
    form, _ = _classify_values(request)
    if not ids or not trips:
        messages.error(request, "Tick the trips to classify first.")
        return redirect(back)
    if len(trips) != len(set(ids)):
        raise Http404("No such trip.")
    if not form.is_valid():
        messages.error(request, "Choose business, private or commute.")
        return redirect(back)
    data = form.cleaned_data
    try:
        classify(trips, data["category"], purpose=data["purpose"], partner=data["partner"],
                 destination=data["destination"], note=data["note"], actor=request.user,
                 interface=Interface.WEB)
    except PermissionDenied:
        messages.error(request, "Some of these trips are not yours to classify.")
    except LogbookError as error:
        messages.error(request, "Nothing was saved: " + " ".join(_flat(error)))
    else:
        messages.success(request, _done_text(trips, data["category"]))
    return redirect(back)


# --------------------------------------------------------------------------- corrections


def _when(trip: Trip) -> str:
    start, end = timezone.localtime(trip.start_time), timezone.localtime(trip.end_time)
    return f"{start:%d.%m. %H:%M}–{end:%H:%M}"


def _correction_failed(request: HttpRequest, trip: Trip, which: str, values: dict[str, str],
                       error: PermissionDenied | LogbookError) -> HttpResponse:
    """The trip page again, the correction's form open with what was typed and why not:
    403 who may not, 409 a trip that cannot be corrected any more, 400 bad input."""
    if isinstance(error, PermissionDenied):
        text = str(error) or "This trip is not yours to correct."
        return _trip_page(request, trip, status=403, correction=which,
                          correction_values=values, correction_errors={"__all__": text})
    conflicts = [f"{text}" if pk == trip.pk else f"Trip {pk}: {text}"
                 for pk, fields in error.messages_by_trip.items()
                 for name, text in fields.items() if name == "__all__"]
    if conflicts:
        return _trip_page(request, trip, status=409, correction=which,
                          correction_values=values,
                          correction_errors={"__all__": " ".join(conflicts)})
    fields: dict[str, str] = {}
    for problems in error.messages_by_trip.values():
        for name, text in problems.items():
            fields[name] = f"{fields[name]} {text}" if name in fields else text
    return _trip_page(request, trip, status=400, correction=which, correction_values=values,
                      correction_errors=fields)


def _form_errors(form: forms.Form) -> dict[str, str]:
    return {name: " ".join(texts) for name, texts in form.errors.items()}


def _refused(request: HttpRequest, trip: Trip, which: str,
             values: dict[str, str]) -> HttpResponse | None:
    """Who may not correct this trip is told so before anything they typed is looked at."""
    refusal = correction_refusal(trip, request.user)
    if refusal is None:
        return None
    return _correction_failed(request, trip, which, values, PermissionDenied(refusal))


@require_POST
@logbook_page
def cancel_trip_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel a trip visibly, with a reason (``logbook.services.cancel_trip``)."""
    trip = _visible_trip(request, pk)
    values = {"reason": request.POST.get("reason", "")[:300]}
    refused = _refused(request, trip, "cancel", values)
    if refused is not None:
        return refused
    form = CancelForm(request.POST)
    if not form.is_valid():
        return _trip_page(request, trip, status=400, correction="cancel",
                          correction_values=values, correction_errors=_form_errors(form))
    try:
        cancel_trip(trip, form.cleaned_data["reason"], actor=request.user,
                    interface=Interface.WEB)
    except (PermissionDenied, LogbookError) as error:
        return _correction_failed(request, trip, "cancel", values, error)
    messages.success(request, f"Cancelled: the trip of {_when(trip)} stays in the logbook, "
                     "struck through, with your reason; it counts in no total.")
    return redirect("logbook:trip", trip.pk)


def _moment_on_trip(trip: Trip, clock: time) -> datetime:
    """A time of day on the trip's page as a moment: on the day (in the organisation's
    zone) where it falls within the trip, so a trip past midnight splits too."""
    zone = ZoneInfo(trip.organisation.time_zone)
    first_day = trip.start_time.astimezone(zone).date()
    days = min((trip.end_time.astimezone(zone).date() - first_day).days, 2) + 1
    moments = [datetime.combine(first_day + timedelta(days=i), clock, zone) for i in range(days)]
    return next((m for m in moments if trip.start_time < m < trip.end_time), moments[0])


@require_POST
@logbook_page
def split_trip_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Split a trip at one of its pauses or at a time (``logbook.services.split_trip``)."""
    trip = _visible_trip(request, pk)
    values = {name: request.POST.get(name, "")[:300] for name in ("split", "time", "reason")}
    refused = _refused(request, trip, "split", values)
    if refused is not None:
        return refused
    form = SplitForm(request.POST)
    if not form.is_valid():
        return _trip_page(request, trip, status=400, correction="split",
                          correction_values=values, correction_errors=_form_errors(form))
    data = form.cleaned_data
    at: datetime | int = (_moment_on_trip(trip, data["time"]) if data["split"] == "time"
                          else int(data["split"]))
    try:
        first, second = split_trip(trip, at, actor=request.user, interface=Interface.WEB,
                                   reason=data["reason"])
    except (PermissionDenied, LogbookError) as error:
        return _correction_failed(request, trip, "split", values, error)
    messages.success(request, f"Split: the trip of {_when(trip)} is now two trips, "
                     f"{_when(first)} and {_when(second)}. The original stays in the logbook, "
                     "struck through.")
    return redirect("logbook:trip", first.pk)


@require_POST
@logbook_page
def merge_trip_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Merge a trip with the one before or after it (``logbook.services.merge_trips``)."""
    trip = _visible_trip(request, pk)
    values = {name: request.POST.get(name, "")[:300] for name in ("neighbour", "reason")}
    refused = _refused(request, trip, "merge", values)
    if refused is not None:
        return refused
    form = MergeForm(request.POST)
    if not form.is_valid():
        return _trip_page(request, trip, status=400, correction="merge",
                          correction_values=values, correction_errors=_form_errors(form))
    other = trips_visible_to(request.user, lock=False).filter(
        pk=form.cleaned_data["neighbour"]).first()
    if other is None:
        raise Http404("No such trip.")
    try:
        merged = merge_trips([trip, other], actor=request.user, interface=Interface.WEB,
                             reason=form.cleaned_data["reason"])
    except (PermissionDenied, LogbookError) as error:
        return _correction_failed(request, trip, "merge", values, error)
    messages.success(request, f"Merged: the trips of {_when(trip)} and {_when(other)} are now "
                     f"one trip, {_when(merged)}. Both stay in the logbook, struck through.")
    return redirect("logbook:trip", merged.pk)


# --------------------------------------------------------------------------- the driver's vehicle


@require_POST
@logbook_page
def choose_vehicle(request: HttpRequest) -> HttpResponse:
    """The driver takes a vehicle from now on (``logbook.services.assign_driver``)."""
    driver = _driver_of(request)
    raw = request.POST.get("vehicle", "")
    vehicle = None
    if re.fullmatch(r"[0-9]{1,18}", raw):
        vehicle = vehicles_to_choose(request.user).filter(pk=int(raw)).first()
    if driver is None or vehicle is None:
        messages.error(request, "Choose one of your organisation's vehicles.")
    else:
        try:
            assign_driver(vehicle, driver, timezone.now(), actor=request.user,
                          interface=Interface.WEB)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, f"You drive {vehicle.name} from now on: its trips are "
                             "yours until you choose another vehicle.")
    return redirect(_next_url(request, reverse("logbook:home")))


# --------------------------------------------------------------------------- vehicles


@logbook_page
def vehicle_logbook(request: HttpRequest, pk: int) -> HttpResponse:
    """A vehicle's logbook for a period: its trips (as the user may see them), odometer
    gaps in line (a manager explains them), and the PDF/CSV export."""
    vehicle = get_object_or_404(logbook_vehicles_for(request.user), pk=pk)
    now = timezone.now()
    zone = ZoneInfo(vehicle.organisation.time_zone)
    period = PeriodForm(request.GET or None)
    today = now.astimezone(zone).date()
    start_day, end_day = period.period(today, today.day)  # default: this month so far
    start, end = period_bounds(vehicle.organisation, start_day, end_day)
    settings_ = logbook_settings_for(vehicle.organisation_id)
    cards = [_card(t, request, now, settings_) for t in
             _with_corrections(trips_visible_to(request.user, vehicle=vehicle, start=start,
                                                 end=end))]
    gaps = list(odometer_gaps_visible_to(request.user, vehicle=vehicle, start=start, end=end))
    # A gap's ends are the times of the trips around it: not shown next to a private one.
    hidden = {moment for c in cards if c["view"]["redacted"]
              for moment in (c["trip"].start_time, c["trip"].end_time)}
    for gap in gaps:
        gap.times_hidden = gap.from_time in hidden or gap.to_time in hidden
    # A gap lies before the trip that starts at its end.
    entries: list[tuple[Any, str, Any]] = [
        *(((c["trip"].start_time, 1, c["trip"].pk), "trip", c) for c in cards),
        *(((g.to_time, 0, g.pk), "gap", g) for g in gaps),
    ]
    entries.sort(key=lambda e: e[0])
    actor = actor_of(request.user)
    return render(request, "logbook/vehicle.html", {
        "vehicle": vehicle, "entries": entries, "start": start_day, "end": end_day,
        "trip_count": sum(1 for c in cards if c["trip"].status == TripStatus.ACTIVE),
        "km": round(sum(c["view"]["distance_km"] for c in cards
                        if c["trip"].status == TripStatus.ACTIVE), 1),
        "unclassified": sum(1 for c in cards if c["view"]["category"] is None
                            and c["trip"].status == TripStatus.ACTIVE),
        "open_gaps": sum(1 for g in gaps if g.status == "open"),
        "can_explain": actor.role == Role.ADMIN and not actor.is_superuser,
    })


@logbook_page
def vehicle_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The logbook of a vehicle and period as PDF or CSV (``logbook.exports``)."""
    vehicle = get_object_or_404(logbook_vehicles_for(request.user), pk=pk)
    period = PeriodForm(request.GET or None)
    today = timezone.now().astimezone(ZoneInfo(vehicle.organisation.time_zone)).date()
    start, end = period.period(today, today.day)
    if (end - start).days > 366:
        start = end - timedelta(days=366)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", vehicle.name).strip("-") or f"vehicle-{vehicle.pk}"
    filename = f"logbook-{name}-{start.isoformat()}-{end.isoformat()}"
    if request.GET.get("format") == "csv":
        response = HttpResponse(export_csv(vehicle, start, end, request.user),
                                content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    else:
        response = HttpResponse(export_pdf(vehicle, start, end, request.user),
                                content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{filename}.pdf"'
    return response


@require_POST
@logbook_page
def explain_odometer_gap(request: HttpRequest, pk: int) -> HttpResponse:
    """The fleet manager's note on an odometer gap (workshop, unit unplugged...)."""
    gap = get_object_or_404(odometer_gaps_visible_to(request.user), pk=pk)
    back = _next_url(request, reverse("logbook:vehicle", args=[gap.vehicle_id]))
    form = GapForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say what happened (at most 300 characters).")
        return redirect(back)
    try:
        explain_gap(gap, form.cleaned_data["note"], actor=request.user)
    except PermissionDenied:
        messages.error(request, "Only the organisation's fleet manager explains odometer gaps.")
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Odometer gap of {gap.km:.1f} km explained.")
    return redirect(back)

