/**
 * Geofences on the live map: shown for everyone, drawn, edited and deleted with
 * Leaflet.draw by admins and dispatchers, saved through /api/v1/geofences/.
 *
 * A circle is stored as a GeoJSON Point plus radius_m, a polygon or rectangle as a
 * GeoJSON Polygon. A new shape is named in #geofence-form before it is saved; the API
 * checks the shape (a polygon may not cross itself) and its answer is shown in the form.
 * Configuration comes from data- attributes of #geofence-form (no inline script).
 */

const L = window.L;

function csrfToken(form) {
  const input = form.querySelector('input[name="csrfmiddlewaretoken"]');
  return input ? input.value : '';
}

function messageOf(body) {
  if (!body || typeof body !== 'object') return 'The geofence could not be saved.';
  const parts = [];
  for (const [field, value] of Object.entries(body)) {
    const text = Array.isArray(value) ? value.join(' ') : String(value);
    parts.push(field === 'non_field_errors' || field === 'detail' ? text : `${field.replace('_', ' ')}: ${text}`);
  }
  return parts.join(' ') || 'The geofence could not be saved.';
}

function geometryOf(layer) {
  if (layer instanceof L.Circle) {
    const c = layer.getLatLng();
    return { geometry: { type: 'Point', coordinates: [c.lng, c.lat] }, radius_m: layer.getRadius() };
  }
  return { geometry: layer.toGeoJSON().geometry, radius_m: null };
}

function start(mapElement, form) {
  const live = mapElement.liveMap;
  if (!live || !L.Control.Draw) return;
  const map = live.map;
  const api = form.dataset.api;
  const canDraw = form.dataset.canDraw === 'true';
  const svg = L.svg({ padding: 0.5 });
  const fences = new L.FeatureGroup().addTo(map);
  const labels = L.layerGroup().addTo(map);
  const byId = new Map();
  let draft = null;

  async function request(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: 'same-origin',
      headers: {
        Accept: 'application/json',
        ...(body ? { 'Content-Type': 'application/json' } : {}),
        ...(method !== 'GET' ? { 'X-CSRFToken': csrfToken(form) } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw Object.assign(new Error(messageOf(data)), { status: response.status });
    return data;
  }

  function style(fence) {
    return { renderer: svg, color: fence.colour || '#0b6bcb', weight: 2, fillOpacity: 0.12 };
  }

  function describe(layer) {
    const fence = layer.fence;
    const limit = fence.speed_limit_kmh ? ` · limit ${Math.round(fence.speed_limit_kmh)} km/h` : '';
    layer.bindPopup(() => {
      const box = document.createElement('div');
      const name = document.createElement('strong');
      name.textContent = fence.name;
      box.append(name, document.createTextNode(limit));
      return box;
    });
  }

  // Each name sits just inside the top edge of its shape (the middle is where vehicles
  // are), and only while the shape is big enough on screen to carry it.
  function placeLabel(layer) {
    if (!layer.label) {
      layer.label = L.tooltip({
        permanent: true, direction: 'bottom', offset: [0, 2], className: 'geofence-label',
      });
    }
    const bounds = layer.getBounds();
    layer.label.setContent(layer.fence.name).setLatLng([bounds.getNorth(), bounds.getCenter().lng]);
  }

  function updateLabels() {
    for (const layer of byId.values()) {
      const bounds = layer.getBounds();
      const size = map.latLngToLayerPoint(bounds.getNorthWest())
        .distanceTo(map.latLngToLayerPoint(bounds.getSouthEast()));
      const wanted = size >= 70;
      if (wanted && !labels.hasLayer(layer.label)) labels.addLayer(layer.label);
      else if (!wanted && labels.hasLayer(layer.label)) labels.removeLayer(layer.label);
    }
  }

  function show(fence) {
    let layer;
    if (fence.geometry.type === 'Point') {
      const [lng, lat] = fence.geometry.coordinates;
      layer = L.circle([lat, lng], { ...style(fence), radius: fence.radius_m });
    } else {
      const rings = fence.geometry.coordinates.map(
        (ring) => ring.slice(0, -1).map(([lng, lat]) => [lat, lng]));
      layer = L.polygon(rings, style(fence));
    }
    layer.fence = fence;
    describe(layer);
    fences.addLayer(layer);
    byId.set(fence.id, layer);
    placeLabel(layer);
    updateLabels();
    return layer;
  }

  async function load() {
    let url = `${api}?page_size=1000`;
    while (url) {
      const page = await request('GET', url);
      for (const fence of page.results) show(fence);
      url = page.next;
    }
  }

  // --- Naming a new shape ----------------------------------------------------------

  const error = form.querySelector('[data-field="error"]');

  function openForm(layer) {
    draft = layer;
    form.reset();
    error.hidden = true;
    form.hidden = false;
    form.elements.name.focus();
  }

  function closeForm() {
    if (draft) map.removeLayer(draft);
    draft = null;
    form.hidden = true;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!draft) return;
    const limit = form.elements.speed_limit_kmh.value;
    const body = {
      name: form.elements.name.value.trim(),
      speed_limit_kmh: limit ? Number(limit) : null,
      ...geometryOf(draft),
    };
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      const fence = await request('POST', api, body);
      map.removeLayer(draft);
      draft = null;
      form.hidden = true;
      show(fence);
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  form.querySelector('[data-action="cancel"]').addEventListener('click', closeForm);
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') closeForm();
  });

  // --- Drawing, editing, deleting --------------------------------------------------

  if (canDraw) {
    const shape = { shapeOptions: { color: '#0b6bcb', weight: 2, fillOpacity: 0.12 } };
    map.addControl(new L.Control.Draw({
      position: 'topleft',
      draw: {
        polygon: { ...shape, allowIntersection: false, showArea: false },
        rectangle: { ...shape, showArea: false },
        circle: { ...shape, showRadius: true },
        polyline: false, marker: false, circlemarker: false,
      },
      edit: { featureGroup: fences, remove: true },
    }));
    map.on(L.Draw.Event.DRAWSTART, () => {
      if (draft) closeForm();
    });
    map.on(L.Draw.Event.CREATED, (event) => {
      event.layer.addTo(map);
      openForm(event.layer);
    });
    map.on(L.Draw.Event.EDITED, (event) => {
      event.layers.eachLayer(async (layer) => {
        try {
          layer.fence = await request('PATCH', `${api}${layer.fence.id}/`, geometryOf(layer));
          placeLabel(layer);
          updateLabels();
        } catch (failure) {
          window.alert(`${layer.fence.name}: ${failure.message}`);
        }
      });
    });
    map.on(L.Draw.Event.DELETED, (event) => {
      event.layers.eachLayer(async (layer) => {
        try {
          await request('DELETE', `${api}${layer.fence.id}/`);
          byId.delete(layer.fence.id);
          labels.removeLayer(layer.label);
        } catch (failure) {
          if (failure.status !== 404) {
            fences.addLayer(layer);
            updateLabels();
            window.alert(`${layer.fence.name}: ${failure.message}`);
          }
        }
      });
    });
  }

  map.on('zoomend', updateLabels);
  load().catch((failure) => console.warn('Geofences could not be loaded:', failure.message));

  // For the browser tests and the console.
  mapElement.geofences = {
    layers: fences,
    byName: (name) => [...byId.values()].find((layer) => layer.fence.name === name),
    draftLayer: () => draft,
    openForm,
  };
}

const mapElement = document.getElementById('live-map');
const form = document.getElementById('geofence-form');
if (mapElement && form && L) start(mapElement, form);
