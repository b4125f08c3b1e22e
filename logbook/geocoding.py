"""Addresses for trip ends: the organisation's named places first, then a cached geocoder.

A named place within its radius gives the address with no network at all, so a
logbook of depots, customers and homes works fully offline (``GEOCODER_URL`` empty).
Otherwise geopy asks the configured provider (a self-hosted Nominatim in production)
and the answer is cached by coordinates rounded to ``GEOCODER_CACHE_DECIMALS`` (4: about
11 m), so a depot visited daily is asked once. Lookups run after the trip is stored,
in the trip tracker's thread or a command, never in the ingest event loop; an address
that arrives later is a revision of the trip by the "geocoder".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from geopy.exc import GeopyError
from geopy.geocoders import get_geocoder_for_service

from logbook.models import AddressCache, Interface, NamedPlace, Trip
from logbook.tripstate import distance_m

logger = logging.getLogger(__name__)

_M_PER_DEG_LAT = 110_574.0  # the least there is: a safe bound for the prefilter


class GeocoderUnavailable(Exception):
    """The provider did not answer; the trip keeps its pending addresses for a retry."""


def match_place(
    places: Sequence[NamedPlace], latitude: float, longitude: float, driver_id: int | None
) -> NamedPlace | None:
    """The nearest place whose radius covers the point (a home only for its driver)."""
    best = None
    best_m = float("inf")
    for place in places:
        if place.driver_id is not None and place.driver_id != driver_id:
            continue
        if abs(place.latitude - latitude) * _M_PER_DEG_LAT > place.radius_m:
            continue
        metres = distance_m(latitude, longitude, place.latitude, place.longitude)
        if metres <= place.radius_m and metres < best_m:
            best, best_m = place, metres
    return best


def format_address(raw: dict) -> str:
    """A short postal address from a Nominatim answer: "Street 1, 12345 Town"."""
    parts = raw.get("address") if isinstance(raw, dict) else None
    if not isinstance(parts, dict):
        return str(raw.get("display_name", "")) if isinstance(raw, dict) else ""
    street = parts.get("road") or parts.get("pedestrian") or parts.get("footway") or ""
    if street and parts.get("house_number"):
        street = f"{street} {parts['house_number']}"
    town = next((parts[k] for k in ("city", "town", "village", "municipality", "county")
                 if parts.get(k)), "")
    place = " ".join(p for p in (parts.get("postcode", ""), town) if p)
    name = parts.get("amenity") or parts.get("shop") or parts.get("building") or ""
    text = ", ".join(p for p in (name if name and name != street else "", street, place) if p)
    return text or str(raw.get("display_name", ""))


class ReverseGeocoder:
    """geopy's geocoder for ``GEOCODER_PROVIDER`` at ``GEOCODER_URL``, cached and paced."""

    def __init__(
        self,
        url: str,
        *,
        provider: str = "nominatim",
        user_agent: str = "fleetbook-logbook",
        timeout: float = 5.0,
        language: str = "de",
        min_delay_s: float = 1.0,
        cache_decimals: int = 4,
    ):
        parts = urlsplit(url)
        geocoder_class = get_geocoder_for_service(provider)
        self.geocoder = geocoder_class(
            domain=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme or "https",
            user_agent=user_agent, timeout=timeout,
        )
        self.key = f"{provider}:{parts.netloc}{parts.path.rstrip('/')}"[:100]
        self.language = language
        self.min_delay_s = min_delay_s
        self.scale = 10**cache_decimals
        self._last_call = 0.0
        self._lock = threading.Lock()

    def cached(self, latitude: float, longitude: float) -> str | None:
        row = AddressCache.objects.filter(
            provider=self.key, lat_key=round(latitude * self.scale),
            lon_key=round(longitude * self.scale),
        ).values_list("address", flat=True).first()
        return row

    def address(self, latitude: float, longitude: float) -> str:
        """The cached address, or the provider's (then cached). Raises GeocoderUnavailable."""
        known = self.cached(latitude, longitude)
        if known is not None:
            return known
        lat_key = round(latitude * self.scale)
        lon_key = round(longitude * self.scale)
        with self._lock:
            wait = self._last_call + self.min_delay_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                location = self.geocoder.reverse(
                    (lat_key / self.scale, lon_key / self.scale), exactly_one=True,
                    language=self.language,
                )
            except GeopyError as error:
                raise GeocoderUnavailable(str(error)) from error
            finally:
                self._last_call = time.monotonic()
        text = "" if location is None else (format_address(location.raw) or location.address)
        text = (text or "")[:300]
        try:
            with transaction.atomic():
                AddressCache.objects.create(provider=self.key, lat_key=lat_key, lon_key=lon_key,
                                            address=text)
        except IntegrityError:
            pass  # another thread asked for the same spot
        return text


def configured_geocoder() -> ReverseGeocoder | None:
    """The geocoder the settings describe; None when ``GEOCODER_URL`` is empty (offline)."""
    url = getattr(settings, "GEOCODER_URL", "")
    if not url:
        return None
    return ReverseGeocoder(
        url,
        provider=getattr(settings, "GEOCODER_PROVIDER", "nominatim"),
        user_agent=getattr(settings, "GEOCODER_USER_AGENT", "fleetbook-logbook"),
        timeout=getattr(settings, "GEOCODER_TIMEOUT_S", 5.0),
        language=getattr(settings, "GEOCODER_LANGUAGE", "de"),
        min_delay_s=getattr(settings, "GEOCODER_MIN_DELAY_S", 1.0),
        cache_decimals=getattr(settings, "GEOCODER_CACHE_DECIMALS", 4),
    )


def geocode_pending_trips(
    geocoder: ReverseGeocoder | None = None, *, limit: int | None = 50
) -> int:
    """Fill the missing addresses of stored trips; returns how many trips were done.

    Without a geocoder (offline) the named places at derivation were all there is, and
    the trips are simply marked done. Stops at the first provider failure: the rest
    stay pending for the next round.
    """
    from logbook.services import change_trip, lock_chain

    geocoder = geocoder if geocoder is not None else configured_geocoder()
    pending = Trip.objects.filter(addresses_pending=True).order_by("id")
    if geocoder is None:
        return pending.update(addresses_pending=False)
    done = 0
    ids = list(pending.values_list("id", flat=True)[:limit] if limit else pending.values_list(
        "id", flat=True))
    for trip_id in ids:
        trip = Trip.objects.get(pk=trip_id)
        try:
            start = trip.start_address or geocoder.address(trip.start_latitude,
                                                           trip.start_longitude)
            end = trip.end_address or geocoder.address(trip.end_latitude, trip.end_longitude)
        except GeocoderUnavailable as error:
            logger.warning("Reverse geocoding unavailable, retrying later: %s", error)
            break
        with transaction.atomic():
            state = lock_chain(trip.vehicle_id)
            trip = Trip.objects.get(pk=trip_id)
            change_trip(trip, {"start_address": start, "end_address": end},
                        interface=Interface.GEOCODER, state=state)
            Trip.objects.filter(pk=trip_id).update(addresses_pending=False)
        done += 1
    return done
