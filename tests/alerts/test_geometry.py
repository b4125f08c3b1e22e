"""Geofence geometry and the hysteresis that keeps GPS jitter from flapping."""

from __future__ import annotations

import math
import random

import pytest

from telematics.alerts.geometry import (
    Circle,
    FenceState,
    GeometryError,
    Polygon,
    fence_step,
    haversine_m,
    parse_geometry,
    point_in_ring,
)

# A 200 m x 200 m-ish square in Berlin (lon, lat), closed.
SQUARE = [[13.400, 52.520], [13.403, 52.520], [13.403, 52.5218], [13.400, 52.5218],
          [13.400, 52.520]]
M_PER_DEG_LAT = 111_195.0


def polygon(*rings):
    return parse_geometry({"type": "Polygon", "coordinates": list(rings)})


def test_haversine_known_distances():
    assert haversine_m(52.52, 13.405, 52.52, 13.405) == 0
    # Berlin TV tower to Munich Frauenkirche: about 504 km.
    assert haversine_m(52.5208, 13.4094, 48.1386, 11.5736) == pytest.approx(504_300, rel=0.005)
    # One degree of latitude.
    assert haversine_m(0, 0, 1, 0) == pytest.approx(M_PER_DEG_LAT, rel=1e-4)


def test_point_in_polygon_and_signed_distance():
    shape = polygon(SQUARE)
    assert point_in_ring(52.521, 13.401, [tuple(p) for p in SQUARE])
    assert shape.contains(52.521, 13.4015)
    assert not shape.contains(52.523, 13.4015)
    # 100 m north of the northern edge (lat 52.5218) is -100 m.
    north = 52.5218 + 100 / M_PER_DEG_LAT
    assert shape.signed_distance_m(north, 13.4015) == pytest.approx(-100, abs=0.5)
    # 20 m inside the southern edge.
    inside = 52.520 + 20 / M_PER_DEG_LAT
    assert shape.signed_distance_m(inside, 13.4015) == pytest.approx(20, abs=0.5)


def test_polygon_hole_is_outside():
    hole = [[13.401, 52.5205], [13.402, 52.5205], [13.402, 52.5213], [13.401, 52.5213],
            [13.401, 52.5205]]
    shape = polygon(SQUARE, hole)
    assert not shape.contains(52.5209, 13.4015)
    assert shape.signed_distance_m(52.5209, 13.4015) < 0
    assert shape.contains(52.5202, 13.4005)


def test_circle_signed_distance_and_bbox():
    circle = parse_geometry({"type": "Point", "coordinates": [13.405, 52.52]}, 150)
    assert isinstance(circle, Circle)
    assert circle.signed_distance_m(52.52, 13.405) == pytest.approx(150)
    point = (52.52 + 200 / M_PER_DEG_LAT, 13.405)
    assert circle.signed_distance_m(*point) == pytest.approx(-50, abs=0.5)
    lat0, lon0, lat1, lon1 = circle.bbox(25)
    assert lat0 < 52.52 - 170 / M_PER_DEG_LAT and lat1 > 52.52 + 170 / M_PER_DEG_LAT
    assert lon0 < 13.405 < lon1


@pytest.mark.parametrize(("geometry", "radius", "message"), [
    ("nope", None, "GeoJSON object"),
    ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, None, "Unsupported"),
    ({"type": "Point", "coordinates": [13.4, 52.5]}, None, "needs radius_m"),
    ({"type": "Point", "coordinates": [13.4, 52.5]}, 0, "radius_m"),
    ({"type": "Point", "coordinates": [13.4, 52.5]}, 1e7, "radius_m"),
    ({"type": "Point", "coordinates": [190, 52.5]}, 10, "longitude"),
    ({"type": "Point", "coordinates": [13.4, 95]}, 10, "latitude"),
    ({"type": "Point", "coordinates": ["a", 5]}, 10, "must be"),
    ({"type": "Polygon", "coordinates": []}, None, "list of rings"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, None, "at least 4"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, None, "not closed"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]}, None, "no area"),
    # A bow tie: its edges cross.
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, None,
     "crosses itself"),
    ({"type": "Polygon", "coordinates": [[[-170, 0], [170, 0], [170, 1], [-170, 0]]]}, None,
     "antimeridian"),
    ({"type": "Polygon", "coordinates": [SQUARE]}, 50, "circles"),
    ({"type": "Polygon", "coordinates": [SQUARE, [[13.5, 52.5], [13.6, 52.5], [13.6, 52.6],
                                                  [13.5, 52.5]]]}, None, "not inside"),
])
def test_bad_geometries_are_refused_with_a_reason(geometry, radius, message):
    with pytest.raises(GeometryError, match=message):
        parse_geometry(geometry, radius)


def test_hysteresis_first_fix_sets_state_without_event():
    state, transition = fence_step(None, 50, 25)
    assert state == FenceState(True) and transition is None
    state, transition = fence_step(None, -5, 25)
    assert state == FenceState(False) and transition is None


def test_hysteresis_enter_deep_or_twice_and_exit_only_when_clearly_out():
    outside = FenceState(False)
    assert fence_step(outside, 30, 25) == (FenceState(True), "enter")
    once, transition = fence_step(outside, 5, 25)
    assert transition is None and once.pending == 1
    assert fence_step(once, 3, 25) == (FenceState(True), "enter")
    # A fix outside in between starts the count again.
    reset, _ = fence_step(once, -1, 25)
    assert reset.pending == 0
    inside = FenceState(True)
    assert fence_step(inside, -20, 25) == (inside, None)
    assert fence_step(inside, -26, 25) == (FenceState(False), "exit")


@pytest.mark.parametrize("seed", range(20))
def test_jitter_along_a_boundary_never_flaps(seed):
    """A parked vehicle whose fixes scatter ±margin around an edge: at most one enter and
    never an exit, whichever side it started on."""
    rng = random.Random(seed)
    shape = polygon(SQUARE)
    margin = 25.0
    edge_lat = 52.5218  # the northern edge
    for start_inside in (False, True):
        state = FenceState(start_inside)
        transitions = []
        for _ in range(500):
            offset = rng.uniform(-margin * 0.99, margin * 0.99)
            lat = edge_lat - offset / M_PER_DEG_LAT  # positive offset is inside
            lon = 13.4015 + rng.uniform(-3, 3) / (M_PER_DEG_LAT * math.cos(math.radians(52.52)))
            state, transition = fence_step(state, shape.signed_distance_m(lat, lon), margin)
            if transition:
                transitions.append(transition)
        assert transitions in ([], ["enter"]), transitions
        assert "exit" not in transitions


def test_drive_through_gives_one_enter_and_one_exit():
    shape = polygon(SQUARE)
    state = None
    transitions = []
    for i in range(60):  # south to north through the square, 10 m a fix
        lat = 52.5190 + i * 10 / M_PER_DEG_LAT
        state, transition = fence_step(state, shape.signed_distance_m(lat, 13.4015), 25)
        if transition:
            transitions.append((transition, round(lat, 5)))
    assert [t for t, _ in transitions] == ["enter", "exit"]
    assert transitions[0][1] > 52.520 and transitions[1][1] > 52.5218


def test_polygon_type_roundtrip():
    shape = polygon(SQUARE)
    assert isinstance(shape, Polygon)
    lat0, lon0, lat1, lon1 = shape.bbox(0)
    assert (lat0, lon0, lat1, lon1) == (52.520, 13.400, 52.5218, 13.403)
