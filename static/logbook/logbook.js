/**
 * The route of a trip on its page: a Leaflet map drawn from the data-route attribute
 * ([[lat, lon], ...]) of #trip-map, with the start and the end marked. Configuration
 * comes from data- attributes, never an inline script (CSP script-src 'self'). The
 * server leaves the map out for a trip whose route the user may not see.
 */

const L = window.L;

function drawRoute(element) {
  let route;
  try {
    route = JSON.parse(element.dataset.route || '[]');
  } catch {
    return;
  }
  if (!Array.isArray(route) || route.length === 0) return;
  const map = L.map(element, { scrollWheelZoom: false, attributionControl: true });
  if (element.dataset.tileUrl) {
    L.tileLayer(element.dataset.tileUrl, {
      maxZoom: 19, attribution: element.dataset.tileAttribution || '',
    }).addTo(map);
  } else {
    element.classList.add('no-tiles');
  }
  const style = getComputedStyle(document.documentElement);
  const colour = style.getPropertyValue('--route').trim() || '#0b6bcb';
  const line = L.polyline(route, { color: colour, weight: 5, opacity: 0.9 }).addTo(map);
  const end = (point, fill, title) => L.circleMarker(point, {
    radius: 8, color: '#fff', weight: 3, fillColor: fill, fillOpacity: 1,
  }).bindTooltip(title).addTo(map);
  end(route[0], '#1f9d55', 'Start');
  end(route[route.length - 1], '#d64545', 'End');
  map.fitBounds(line.getBounds(), { padding: [24, 24], maxZoom: 16 });
  element.tripMap = { map, line };
}

const element = document.getElementById('trip-map');
if (element && L) {
  drawRoute(element);
}
