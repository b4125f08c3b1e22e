"""Geofence geometry: pure functions, no Django, no database.

A geofence is a GeoJSON ``Polygon`` (an outer ring and optional holes, positions as
``[longitude, latitude]``) or a circle: a GeoJSON ``Point`` plus a radius in metres
(GeoJSON has no circle; this is what Leaflet.draw and most fleet platforms store).

Every shape answers one question, ``signed_distance_m(lat, lon)``: how far a point lies
from the boundary, positive inside and negative outside. Circles use the haversine
distance to the centre; polygons use ray casting for inside/outside and the distance to
the nearest edge in a local equirectangular projection around the point (accurate to
well under a metre at geofence sizes, i.e. up to some tens of kilometres).

Hysteresis (``fence_step``) turns those distances into enter and exit transitions that
GPS jitter along a boundary cannot flap:

* **enter** when a fix lies inside by more than ``margin_m``, or when
  ``ENTER_FIXES`` (2) consecutive fixes lie inside at all;
* **exit** only when a fix lies outside by more than ``margin_m``.

Jitter of up to ``margin_m`` around the boundary can therefore cause at most one enter
(two slightly-inside fixes in a row) and never an exit; a vehicle that really leaves is
soon ``margin_m`` out and exits once. A fence's first fix for a vehicle only records
where the vehicle is (``known=False``): transitions are events, positions are not.

Polygons must not cross the antimeridian (a ring spanning more than 180° of longitude is
refused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

EARTH_RADIUS_M = 6_371_008.8
ENTER_FIXES = 2
MAX_VERTICES = 2000
MAX_RADIUS_M = 100_000.0


class GeometryError(ValueError):
    """A geometry that cannot be a geofence; the message says why, for a 400 answer.

    ``field`` names what to fix: ``geometry`` or ``radius_m``.
    """

    def __init__(self, message: str, field: str = "geometry"):
        super().__init__(message)
        self.field = field


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def point_in_ring(lat: float, lon: float, ring: list[tuple[float, float]]) -> bool:
    """Ray casting; ``ring`` holds (lon, lat) pairs, closed or not."""
    inside = False
    n = len(ring)
    j = n - 1
    for i in range(n):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat):
            x = xi + (lat - yi) * (xj - xi) / (yj - yi)
            if lon < x:
                inside = not inside
        j = i
    return inside


def distance_to_ring_m(lat: float, lon: float, ring: list[tuple[float, float]]) -> float:
    """Distance in metres from a point to the nearest edge of a ring of (lon, lat)."""
    k_lat = math.radians(1.0) * EARTH_RADIUS_M
    k_lon = k_lat * math.cos(math.radians(lat))
    best = math.inf
    n = len(ring)
    for i in range(n):
        x1, y1 = (ring[i][0] - lon) * k_lon, (ring[i][1] - lat) * k_lat
        x2, y2 = (ring[(i + 1) % n][0] - lon) * k_lon, (ring[(i + 1) % n][1] - lat) * k_lat
        dx, dy = x2 - x1, y2 - y1
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(x1 * dx + y1 * dy) / length2))
        best = min(best, math.hypot(x1 + t * dx, y1 + t * dy))
    return best


@dataclass(frozen=True, slots=True)
class Circle:
    latitude: float
    longitude: float
    radius_m: float

    def signed_distance_m(self, lat: float, lon: float) -> float:
        return self.radius_m - haversine_m(self.latitude, self.longitude, lat, lon)

    def bbox(self, margin_m: float = 0.0) -> tuple[float, float, float, float]:
        """(min_lat, min_lon, max_lat, max_lon), widened by ``margin_m``."""
        reach = self.radius_m + margin_m
        dlat = math.degrees(reach / EARTH_RADIUS_M)
        cos = max(0.01, math.cos(math.radians(min(89.0, abs(self.latitude) + dlat))))
        dlon = math.degrees(reach / (EARTH_RADIUS_M * cos))
        return (self.latitude - dlat, self.longitude - dlon,
                self.latitude + dlat, self.longitude + dlon)


@dataclass(frozen=True, slots=True)
class Polygon:
    rings: tuple[tuple[tuple[float, float], ...], ...]  # outer first, then holes; (lon, lat)

    def contains(self, lat: float, lon: float) -> bool:
        if not point_in_ring(lat, lon, list(self.rings[0])):
            return False
        return not any(point_in_ring(lat, lon, list(hole)) for hole in self.rings[1:])

    def signed_distance_m(self, lat: float, lon: float) -> float:
        distance = min(distance_to_ring_m(lat, lon, list(ring)) for ring in self.rings)
        return distance if self.contains(lat, lon) else -distance

    def bbox(self, margin_m: float = 0.0) -> tuple[float, float, float, float]:
        lons = [p[0] for p in self.rings[0]]
        lats = [p[1] for p in self.rings[0]]
        dlat = math.degrees(margin_m / EARTH_RADIUS_M)
        cos = max(0.01, math.cos(math.radians(min(89.0, max(abs(min(lats)), abs(max(lats)))))))
        dlon = math.degrees(margin_m / (EARTH_RADIUS_M * cos))
        return (min(lats) - dlat, min(lons) - dlon, max(lats) + dlat, max(lons) + dlon)


Shape = Circle | Polygon


def in_bbox(bbox: tuple[float, float, float, float], lat: float, lon: float) -> bool:
    return bbox[0] <= lat <= bbox[2] and bbox[1] <= lon <= bbox[3]


# --- Parsing and validating GeoJSON -----------------------------------------------------

def _position(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, list | tuple) or len(value) not in (2, 3)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise GeometryError(f"{where} must be [longitude, latitude].")
    lon, lat = float(value[0]), float(value[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GeometryError(f"{where} is not a finite number.")
    if not -180.0 <= lon <= 180.0:
        raise GeometryError(f"{where}: longitude {lon} is outside -180..180.")
    if not -90.0 <= lat <= 90.0:
        raise GeometryError(f"{where}: latitude {lat} is outside -90..90.")
    return lon, lat


def _segments_cross(a, b, c, d) -> bool:
    """Whether segments ab and cd properly intersect (touching at an end does not count)."""
    def orient(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    d1, d2 = orient(c, d, a), orient(c, d, b)
    d3, d4 = orient(a, b, c), orient(a, b, d)
    return ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4))


def _ring(value: Any, index: int) -> tuple[tuple[float, float], ...]:
    name = "The outer ring" if index == 0 else f"Hole {index}"
    if not isinstance(value, list | tuple):
        raise GeometryError(f"{name} must be a list of positions.")
    points = [_position(p, f"{name}, position {i + 1}") for i, p in enumerate(value)]
    if len(points) < 4:
        raise GeometryError(
            f"{name} needs at least 4 positions (3 corners and the first one repeated).")
    if points[0] != points[-1]:
        raise GeometryError(f"{name} is not closed: its last position must repeat the first.")
    if len(points) > MAX_VERTICES:
        raise GeometryError(f"{name} has more than {MAX_VERTICES} positions.")
    corners = points[:-1]
    if len(set(corners)) < 3:
        raise GeometryError(f"{name} needs at least 3 distinct corners.")
    lons = [p[0] for p in corners]
    if max(lons) - min(lons) > 180:
        raise GeometryError(f"{name} spans more than 180° of longitude (the antimeridian "
                            "is not supported).")
    n = len(corners)
    for i in range(n):
        a, b = corners[i], corners[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # neighbours through the closing edge
            c, d = corners[j], corners[(j + 1) % n]
            if _segments_cross(a, b, c, d):
                raise GeometryError(f"{name} crosses itself (edges {i + 1} and {j + 1}).")
    area = 0.0
    for i in range(len(corners)):
        x1, y1 = corners[i]
        x2, y2 = corners[(i + 1) % len(corners)]
        area += x1 * y2 - x2 * y1
    if abs(area) < 1e-14:
        raise GeometryError(f"{name} encloses no area.")
    return tuple(points)


def parse_geometry(geometry: Any, radius_m: float | None = None) -> Shape:
    """A shape from GeoJSON (a ``Polygon``, or a ``Point`` with ``radius_m``).

    Raises ``GeometryError`` with a message a person can act on.
    """
    if not isinstance(geometry, dict):
        raise GeometryError("The geometry must be a GeoJSON object.")
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if kind == "Point":
        lon, lat = _position(coordinates, "The centre")
        if radius_m is None:
            raise GeometryError("A circle (a Point) needs radius_m.", "radius_m")
        if not isinstance(radius_m, int | float) or not math.isfinite(radius_m) \
                or radius_m <= 0 or radius_m > MAX_RADIUS_M:
            raise GeometryError(
                f"radius_m must be more than 0 and at most {MAX_RADIUS_M:.0f}.", "radius_m")
        return Circle(lat, lon, float(radius_m))
    if kind == "Polygon":
        if radius_m is not None:
            raise GeometryError("radius_m is for circles (a Point) only.", "radius_m")
        if not isinstance(coordinates, list | tuple) or not coordinates:
            raise GeometryError("A Polygon needs a list of rings, the outer ring first.")
        rings = tuple(_ring(ring, i) for i, ring in enumerate(coordinates))
        outer = Polygon(rings[:1])
        for i, hole in enumerate(rings[1:], start=1):
            if not all(outer.contains(lat, lon) for lon, lat in hole[:-1]):
                raise GeometryError(f"Hole {i} is not inside the outer ring.")
        return Polygon(rings)
    raise GeometryError(
        f"Unsupported geometry type {kind!r}: use a Polygon, or a Point with radius_m.")


# --- Hysteresis -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FenceState:
    """Where a vehicle stands with one geofence: inside or not, and inside-fixes pending."""

    inside: bool
    pending: int = 0


def fence_step(state: FenceState | None, distance_m: float,
               margin_m: float) -> tuple[FenceState, str | None]:
    """Apply one fix's signed distance; returns the new state and "enter", "exit" or None.

    ``state`` None means the fence knows nothing of the vehicle yet: the fix sets the
    state (inside when ``distance_m > 0``) without a transition. See the module doc.
    """
    if state is None:
        return FenceState(distance_m > 0), None
    if state.inside:
        if distance_m < -margin_m:
            return FenceState(False), "exit"
        return FenceState(True), None
    if distance_m > margin_m:
        return FenceState(True), "enter"
    if distance_m > 0:
        pending = state.pending + 1
        if pending >= ENTER_FIXES:
            return FenceState(True), "enter"
        return FenceState(False, pending), None
    return FenceState(False), None
