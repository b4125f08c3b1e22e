/**
 * The live map: vehicles on a Leaflet map and in a list, kept current over /ws/live/.
 *
 * The server renders the page with what it knew at request time; this module then takes
 * over: it opens the websocket, applies the snapshot (the full set of visible vehicles)
 * and the batched updates that follow, and reconnects with backoff when the socket drops.
 * Configuration comes from data- attributes on #live-map, never from an inline script,
 * so a Content-Security-Policy of script-src 'self' holds. With data-focus the map shows
 * that one vehicle and keeps #vehicle-detail current (the vehicle page).
 *
 * Markers are drawn on one canvas (a vehicle is an arrow turned to its course, with its
 * name beside it) and clustered, so thousands of vehicles stay smooth.
 */

const L = window.L;

const STATUSES = ['moving', 'stopped', 'parked', 'offline'];
const FOLLOW_ZOOM = 16; // clustering stops here, so a followed vehicle is always drawn
const MAX_RECONNECT_MS = 30000;
const LABEL_FONT = '600 12px system-ui, sans-serif';
const TIP = 1.8; // how far a marker's point reaches, in radii

// --- Formatting (the same rules as fleet/views.py) ----------------------------------

function formatAge(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

function formatSpeed(v) {
  return v.speed_kmh == null ? '—' : `${Math.round(v.speed_kmh)} km/h`;
}

function formatPosition(v) {
  return v.latitude == null ? '—' : `${v.latitude.toFixed(5)}, ${v.longitude.toFixed(5)}`;
}

function formatIgnition(v) {
  if (!v.fix_time) return '—';
  return v.ignition == null ? 'unknown' : v.ignition ? 'on' : 'off';
}

function timeFormatter(timeZone) {
  // Swedish dates read as ISO 8601 ("2024-05-01 12:34:56"), like the server's.
  const options = {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  };
  try {
    return new Intl.DateTimeFormat('sv-SE', { ...options, timeZone });
  } catch {
    return new Intl.DateTimeFormat('sv-SE', options);
  }
}

function statusColours() {
  const style = getComputedStyle(document.documentElement);
  const fallback = { moving: '#1f9d55', stopped: '#e8a317', parked: '#3d6fb4', offline: '#8c96a0' };
  const colours = {};
  for (const status of STATUSES) {
    colours[status] = style.getPropertyValue(`--status-${status}`).trim() || fallback[status];
  }
  return colours;
}

// --- A vehicle marker drawn on the canvas renderer ----------------------------------

const measure = document.createElement('canvas').getContext('2d');
measure.font = LABEL_FONT;
let COLOURS = null;

const VehicleMarker = L.CircleMarker.extend({
  options: {
    radius: 9, weight: 1.5, status: 'offline', course: null, label: '', selected: false,
  },

  initialize(latlng, options) {
    L.CircleMarker.prototype.initialize.call(this, latlng, options);
    this._labelWidth = measure.measureText(this.options.label).width;
  },

  setVehicle(changes) {
    L.setOptions(this, changes);
    if ('label' in changes) this._labelWidth = measure.measureText(this.options.label).width;
    return this.redraw();
  },

  // The cluster group fades markers in and out with these while it animates. Like its
  // own markers' opacity, hiding lasts only while the marker is on the map.
  clusterHide() {
    if (this._map) {
      this._clusterHidden = true;
      this.redraw();
    }
    return this;
  },
  clusterShow() {
    this._clusterHidden = false;
    return this.redraw();
  },

  onAdd(map) {
    this._clusterHidden = false;
    L.CircleMarker.prototype.onAdd.call(this, map);
  },

  _updateBounds() {
    // The arrow's tip, the selection ring and the label all lie outside the radius; the
    // canvas only repaints inside these bounds.
    const r = this._radius * TIP + this._clickTolerance() + 2;
    const right = this.options.label ? this._radius * TIP + 6 + this._labelWidth : 0;
    this._pxBounds = L.bounds(this._point.subtract([r, r]), this._point.add([Math.max(r, right), r]));
  },

  _updatePath() {
    if (this._renderer._drawVehicle) this._renderer._drawVehicle(this);
    else L.CircleMarker.prototype._updatePath.call(this);
  },

  _containsPoint(p) {
    return this._pxBounds.contains(p);
  },
});

L.Canvas.include({
  _drawVehicle(layer) {
    if (!this._drawing || layer._empty() || layer._clusterHidden) return;
    const ctx = this._ctx;
    const p = layer._point;
    const r = layer._radius;
    const o = layer.options;
    ctx.save();
    ctx.globalAlpha = 1;
    if (o.selected) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, r + 6, 0, Math.PI * 2);
      ctx.fillStyle = 'rgba(11, 107, 203, 0.22)';
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = '#0b6bcb';
      ctx.stroke();
    }
    ctx.save();
    ctx.translate(p.x, p.y);
    ctx.beginPath();
    if (o.course == null) {
      ctx.arc(0, 0, r * 0.85, 0, Math.PI * 2);
    } else {
      // A disc drawn out to a point in the direction of travel (a teardrop).
      ctx.rotate((o.course * Math.PI) / 180);
      const side = Math.acos(1 / TIP);
      ctx.moveTo(0, -r * TIP);
      ctx.arc(0, 0, r, -Math.PI / 2 + side, Math.PI * 1.5 - side, false);
      ctx.closePath();
    }
    ctx.fillStyle = COLOURS[o.status] || COLOURS.offline;
    ctx.fill();
    ctx.lineJoin = 'round';
    ctx.lineWidth = o.weight;
    ctx.strokeStyle = '#fff';
    ctx.stroke();
    ctx.restore();
    if (o.label) {
      ctx.font = LABEL_FONT;
      ctx.textBaseline = 'middle';
      ctx.lineJoin = 'round';
      ctx.lineWidth = 3;
      ctx.strokeStyle = 'rgba(255, 255, 255, 0.9)';
      ctx.strokeText(o.label, p.x + r * TIP + 4, p.y);
      ctx.fillStyle = '#1d2733';
      ctx.fillText(o.label, p.x + r * TIP + 4, p.y);
    }
    ctx.restore();
  },
});

function clusterIcon(cluster) {
  const markers = cluster.getAllChildMarkers();
  const n = markers.length;
  const size = n < 10 ? 'small' : n < 100 ? 'medium' : 'large';
  const pixels = { small: 34, medium: 40, large: 48 }[size];
  const moving = markers.some((m) => m.options.status === 'moving') ? ' has-moving' : '';
  return L.divIcon({
    html: `<span>${n}</span>`,
    className: `vehicle-cluster vehicle-cluster-${size}${moving}`,
    iconSize: L.point(pixels, pixels),
  });
}

// --- The page ------------------------------------------------------------------------

function start(element) {
  COLOURS = statusColours();
  const config = element.dataset;
  const focusId = config.focus ? Number(config.focus) : null;
  const offlineAfterMs = Number(config.offlineAfter || 600) * 1000;
  const timeFormat = timeFormatter(config.timeZone || 'UTC');
  const vehicleUrlPrefix = (config.vehicleUrl || '/vehicles/0/').replace(/0\/$/, '');
  const vehicleUrl = (id) => `${vehicleUrlPrefix}${id}/`;

  const map = L.map(element, {
    preferCanvas: true, maxZoom: 19, worldCopyJump: true, zoomControl: true,
  });
  const renderer = L.canvas({ padding: 0.5, tolerance: 4 });
  if (config.tileUrl) {
    L.tileLayer(config.tileUrl, { maxZoom: 19, attribution: config.tileAttribution || '' })
      .addTo(map);
  } else {
    element.classList.add('no-tiles');
  }
  map.setView([30, 10], 2);
  // The first snapshot is drawn once its markers are all in the cluster group (which
  // adds a big batch in chunks, so the page stays responsive) and a frame has painted
  // them: then #live-map gets data-rendered (the number of markers) and the page a
  // performance mark, the signal the browser tests and benchmarks/bench_map_load.py
  // wait for.
  let whenChunksDone = null;
  const clusters = L.markerClusterGroup({
    chunkedLoading: true,
    // Animated cluster splits read the page's layout (offsetWidth) to restart their CSS
    // transitions, and with ten thousand rows in the list beside the map each such read
    // costs a full layout: clusters simply swap at the end of a zoom instead.
    animate: false,
    showCoverageOnHover: false,
    disableClusteringAtZoom: FOLLOW_ZOOM,
    maxClusterRadius: 60,
    iconCreateFunction: clusterIcon,
    chunkProgress(processed, total) {
      if (processed >= total && whenChunksDone) {
        const done = whenChunksDone;
        whenChunksDone = null;
        setTimeout(done, 0); // the group finishes adding right after this call
      }
    },
  }).addTo(map);

  const list = document.getElementById('vehicle-rows');
  const search = document.getElementById('vehicle-search');
  const filter = document.getElementById('status-filter');
  const noMatches = document.getElementById('no-matches');
  const connection = document.getElementById('live-connection');
  const panel = focusId ? document.getElementById('vehicle-detail')
    : document.getElementById('vehicle-panel');
  const followButton = panel && panel.querySelector('[data-action="follow"]');

  const vehicles = new Map(); // id -> {data, marker, row, cells, inGroup}
  let ops = { remove: [], move: [], add: [], refresh: [] };
  let selectedId = focusId;
  let following = focusId != null;
  let clockSkewMs = 0;
  let seenSnapshot = false;
  let query = '';
  let statusWanted = '';

  const now = () => Date.now() + clockSkewMs;
  const hasPosition = (v) => v.latitude != null && v.longitude != null;

  function matches(v) {
    if (statusWanted && v.status !== statusWanted) return false;
    if (!query) return true;
    return [v.name, v.licence_plate, v.driver]
      .some((text) => text && text.toLowerCase().includes(query));
  }

  // Markers move through the cluster group in batches: it finds a marker by its old
  // position, so a moved marker is taken out, moved, and put back.
  function queueMarker(entry, statusChanged) {
    const v = entry.data;
    if (!hasPosition(v)) {
      // On a private trip the server sends no position: take the marker off the map.
      if (entry.inGroup) ops.remove.push(entry.marker);
      entry.inGroup = false;
      return;
    }
    const target = L.latLng(v.latitude, v.longitude);
    if (!entry.marker) {
      entry.marker = new VehicleMarker(target, {
        renderer, status: v.status, course: v.course ?? null, label: v.name,
        selected: v.id === selectedId,
      });
      entry.marker.on('click', () => select(v.id, { follow: true }));
    }
    const marker = entry.marker;
    const want = matches(v);
    const moved = !marker.getLatLng().equals(target);
    if (entry.inGroup && (!want || moved)) {
      ops.remove.push(marker);
      entry.inGroup = false;
    }
    if (moved) ops.move.push([marker, target]);
    if (want && !entry.inGroup) {
      ops.add.push(marker);
      entry.inGroup = true;
    } else if (statusChanged && entry.inGroup) {
      ops.refresh.push(marker);
    }
  }

  function flushMarkers() {
    if (ops.remove.length) clusters.removeLayers(ops.remove);
    for (const [marker, target] of ops.move) marker.setLatLng(target);
    if (ops.add.length) clusters.addLayers(ops.add);
    if (ops.refresh.length) clusters.refreshClusters(ops.refresh);
    ops = { remove: [], move: [], add: [], refresh: [] };
  }

  // One row built once and cloned per vehicle: ten thousand rows at a time.
  const rowTemplate = (() => {
    const row = document.createElement('tr');
    row.tabIndex = 0;
    row.setAttribute('role', 'row'); // the rows are styled as grids (site.css): say so
    for (const className of ['name', '', 'speed num', 'age num', 'position']) {
      const td = document.createElement('td');
      td.setAttribute('role', 'cell');
      if (className) td.className = className;
      row.append(td);
    }
    row.cells[0].append(document.createElement('a'), document.createElement('small'));
    row.cells[1].append(document.createElement('span'));
    return row;
  })();

  function buildRow(entry) {
    const id = entry.data.id;
    const row = rowTemplate.cloneNode(true);
    row.dataset.vehicle = id;
    const [name, status, speed, age, position] = row.cells;
    name.firstChild.href = vehicleUrl(id);
    entry.row = row;
    entry.cells = {
      name: name.firstChild, plate: name.lastChild, badge: status.firstChild, speed, age,
      position,
    };
    return row;
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  function ageText(v) {
    if (v.private) return 'Private trip';
    return v.fix_time ? formatAge((now() - Date.parse(v.fix_time)) / 1000) : 'No fix yet';
  }

  function updateRow(entry) {
    if (!entry.row) return;
    const v = entry.data;
    const c = entry.cells;
    setText(c.name, v.name);
    setText(c.plate, v.licence_plate || '');
    setText(c.badge, v.status);
    c.badge.className = `badge status-${v.status}`;
    setText(c.speed, formatSpeed(v));
    setText(c.age, ageText(v));
    setText(c.position, formatPosition(v));
    entry.row.dataset.status = v.status;
    entry.row.hidden = !matches(v);
  }

  function renderPanel() {
    if (!panel) return;
    const entry = vehicles.get(selectedId);
    if (!entry) {
      if (!focusId) panel.hidden = true;
      return;
    }
    const v = entry.data;
    const field = (name) => panel.querySelector(`[data-field="${name}"]`);
    setText(field('name'), v.name);
    setText(field('licence_plate'), [v.licence_plate].filter(Boolean).join(''));
    const badge = field('status');
    if (badge) {
      setText(badge, v.status);
      badge.className = `badge status-${v.status}`;
    }
    setText(field('fix_time'), v.fix_time ? timeFormat.format(new Date(v.fix_time)) : 'No fix yet');
    setText(field('age'), v.fix_time ? `(${ageText(v)} ago)` : '');
    setText(field('speed'), formatSpeed(v));
    setText(field('position'), formatPosition(v));
    setText(field('ignition'), formatIgnition(v));
    setText(field('driver'), v.driver || '—');
    const link = field('link');
    if (link) link.href = vehicleUrl(v.id);
    if (followButton) {
      followButton.setAttribute('aria-pressed', String(following));
      setText(followButton, following ? 'Following' : 'Follow');
    }
  }

  function updateCounts() {
    if (!filter) return;
    const counts = { '': vehicles.size };
    for (const status of STATUSES) counts[status] = 0;
    for (const { data } of vehicles.values()) counts[data.status] = (counts[data.status] || 0) + 1;
    for (const option of filter.options) {
      const label = option.value ? option.value[0].toUpperCase() + option.value.slice(1) : 'All';
      setText(option, `${label} (${counts[option.value] ?? 0})`);
    }
  }

  function updateNoMatches() {
    if (!noMatches) return;
    let any = false;
    for (const entry of vehicles.values()) {
      if (entry.row && !entry.row.hidden) { any = true; break; }
    }
    noMatches.hidden = any || vehicles.size === 0;
  }

  function isOlder(update, current) {
    return update.fix_time && current.fix_time
      && Date.parse(update.fix_time) < Date.parse(current.fix_time);
  }

  function apply(update) {
    if (focusId != null && update.id !== focusId) return false;
    let entry = vehicles.get(update.id);
    if (entry && isOlder(update, entry.data)) return false;
    const previous = entry ? entry.data : {};
    if (!entry) {
      entry = { data: null, marker: null, row: null, cells: null, inGroup: false };
      vehicles.set(update.id, entry);
    }
    const v = { ...previous, ...update };
    entry.data = v;
    if (entry.marker) {
      const changes = {};
      if (v.status !== entry.marker.options.status) changes.status = v.status;
      if ((v.course ?? null) !== entry.marker.options.course) changes.course = v.course ?? null;
      if (v.name !== entry.marker.options.label) changes.label = v.name;
      if (Object.keys(changes).length) entry.marker.setVehicle(changes);
    }
    queueMarker(entry, previous.status !== v.status);
    updateRow(entry);
    if (v.id === selectedId) {
      renderPanel();
      if (following && hasPosition(v)) centreOn(v, map.getZoom());
    }
    return previous.status !== v.status;
  }

  function mark(name) {
    if (window.performance && performance.mark) performance.mark(`fleetbook:${name}`);
  }

  function markRendered() {
    requestAnimationFrame(() => requestAnimationFrame(() => {
      let drawn = 0;
      for (const entry of vehicles.values()) if (entry.inGroup) drawn += 1;
      mark('markers-drawn');
      element.dataset.rendered = String(drawn);
    }));
  }

  function applySnapshot(message) {
    mark('snapshot-received');
    if (message.server_time) clockSkewMs = Date.parse(message.server_time) - Date.now();
    const fresh = new Set();
    for (const v of message.vehicles) {
      if (focusId == null || v.id === focusId) fresh.add(v.id);
    }
    for (const [id, entry] of vehicles) {
      if (!fresh.has(id)) {
        if (entry.inGroup) ops.remove.push(entry.marker);
        vehicles.delete(id);
      }
    }
    for (const v of message.vehicles) apply(v);
    const first = !seenSnapshot;
    if (first) {
      // The view first, then the markers (the cluster group lays them out once, for the
      // zoom they are seen at), then the list: sizing the map reads the page's layout,
      // which is cheap before ten thousand new rows are in it.
      seenSnapshot = true;
      const focused = vehicles.get(focusId);
      if (focused && hasPosition(focused.data)) {
        map.setView([focused.data.latitude, focused.data.longitude], 15, { animate: false });
      } else {
        const bounds = L.latLngBounds([]);
        for (const e of vehicles.values()) {
          if (hasPosition(e.data)) bounds.extend([e.data.latitude, e.data.longitude]);
        }
        if (bounds.isValid()) {
          map.fitBounds(bounds, { padding: [40, 40], maxZoom: 15, animate: false });
        }
      }
    }
    const waitForChunks = first && ops.add.length > 0;
    if (waitForChunks) whenChunksDone = markRendered;
    flushMarkers();
    if (list) {
      // The server's rows were a first paint; from here on the rows are the snapshot's.
      const rows = document.createDocumentFragment();
      for (const entry of vehicles.values()) {
        if (!entry.row) buildRow(entry);
        updateRow(entry);
        rows.append(entry.row);
      }
      list.replaceChildren(rows);
      list.dataset.listed = String(vehicles.size);
      mark('list-populated');
    }
    if (first && !waitForChunks) markRendered();
    updateCounts();
    updateNoMatches();
    renderPanel();
  }

  function applyUpdate(message) {
    let statusChanged = false;
    for (const v of message.vehicles) statusChanged = apply(v) || statusChanged;
    flushMarkers();
    if (statusChanged) {
      updateCounts();
      updateNoMatches();
    }
  }

  // Centre a vehicle on the map, unless the panel covers the centre (on a phone, where it
  // lies over the map's foot): then in the part of the map the panel leaves free.
  function centreOn(v, zoom) {
    let offset = L.point(0, 0);
    if (panel && !panel.hidden && !focusId) {
      const m = element.getBoundingClientRect();
      const p = panel.getBoundingClientRect();
      const x = (m.left + m.right) / 2;
      const y = (m.top + m.bottom) / 2;
      if (x >= p.left && x <= p.right && y >= p.top && y <= p.bottom) {
        offset = p.width > m.width / 2
          ? L.point(0, Math.max(0, m.bottom - p.top) / 2)
          : L.point(Math.max(0, m.right - p.left) / 2, 0);
      }
    }
    const centre = map.unproject(map.project([v.latitude, v.longitude], zoom).add(offset), zoom);
    if (zoom === map.getZoom()) map.panTo(centre);
    else map.setView(centre, zoom);
  }

  function select(id, { follow }) {
    const previous = vehicles.get(selectedId);
    if (previous && previous.marker) previous.marker.setVehicle({ selected: false });
    if (previous && previous.row) previous.row.classList.remove('selected');
    selectedId = id;
    const entry = vehicles.get(id);
    if (!entry) return;
    if (entry.marker) entry.marker.setVehicle({ selected: true });
    if (entry.row) entry.row.classList.add('selected');
    following = follow;
    if (panel) panel.hidden = false;
    renderPanel();
    if (follow && hasPosition(entry.data)) {
      centreOn(entry.data, Math.max(map.getZoom(), FOLLOW_ZOOM));
    }
  }

  function closePanel() {
    const entry = vehicles.get(selectedId);
    if (entry && entry.marker) entry.marker.setVehicle({ selected: false });
    if (entry && entry.row) entry.row.classList.remove('selected');
    selectedId = null;
    following = false;
    if (panel) panel.hidden = true;
  }

  function applyFilter() {
    for (const entry of vehicles.values()) {
      queueMarker(entry, false);
      if (entry.row) entry.row.hidden = !matches(entry.data);
    }
    flushMarkers();
    updateNoMatches();
  }

  // A vehicle that stops reporting turns offline here without waiting for the server,
  // which only speaks when a fix arrives.
  function tick() {
    let statusChanged = false;
    for (const entry of vehicles.values()) {
      const v = entry.data;
      if (v.fix_time && v.status !== 'offline'
          && now() - Date.parse(v.fix_time) > offlineAfterMs) {
        v.status = 'offline';
        if (entry.marker) entry.marker.setVehicle({ status: 'offline' });
        queueMarker(entry, true);
        updateRow(entry);
        statusChanged = true;
      } else if (entry.cells) {
        setText(entry.cells.age, ageText(v));
      }
    }
    if (statusChanged) {
      flushMarkers();
      updateCounts();
      updateNoMatches();
    }
    if (selectedId != null) renderPanel();
  }

  // --- Events ------------------------------------------------------------------------

  if (list) {
    const rowOf = (event) => event.target.closest('tr[data-vehicle]');
    list.addEventListener('click', (event) => {
      const row = rowOf(event);
      if (!row) return;
      const link = event.target.closest('a');
      if (link && (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0)) return;
      event.preventDefault();
      select(Number(row.dataset.vehicle), { follow: true });
      if (window.matchMedia('(max-width: 760px)').matches) {
        element.scrollIntoView({ behavior: 'smooth', block: 'start' });
      }
    });
    list.addEventListener('keydown', (event) => {
      const row = rowOf(event);
      if (row && (event.key === 'Enter' || event.key === ' ')) {
        event.preventDefault();
        select(Number(row.dataset.vehicle), { follow: true });
      }
    });
  }
  if (search) {
    let timer = null;
    search.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        query = search.value.trim().toLowerCase();
        applyFilter();
      }, 120);
    });
  }
  if (filter) {
    filter.addEventListener('change', () => {
      statusWanted = filter.value;
      applyFilter();
    });
  }
  if (panel && !focusId) {
    panel.querySelector('[data-action="close"]').addEventListener('click', closePanel);
    followButton.addEventListener('click', () => {
      if (following) {
        following = false;
        renderPanel();
      } else {
        select(selectedId, { follow: true });
      }
    });
  }
  map.on('dragstart', () => {
    if (following && !focusId) {
      following = false;
      renderPanel();
    }
  });
  setInterval(tick, 1000);

  // --- The websocket -----------------------------------------------------------------

  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  const socketUrl = `${scheme}://${window.location.host}${config.wsPath || '/ws/live/'}`;
  let failures = 0;
  let retryTimer = null;

  function showConnection(state, text) {
    element.dataset.connection = state;
    if (connection) {
      connection.dataset.state = state;
      setText(connection, text);
    }
  }

  function connect() {
    retryTimer = null;
    const socket = new WebSocket(socketUrl);
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(event.data);
      // Other modules (event-feed.js) hear every message without a socket of their own.
      element.dispatchEvent(new CustomEvent('live:message', { detail: message }));
      if (message.type === 'snapshot') {
        failures = 0;
        applySnapshot(message);
        showConnection('live', 'Live');
      } else if (message.type === 'update') {
        applyUpdate(message);
      }
    });
    socket.addEventListener('close', () => {
      // Back off 1, 2, 4 … 30 s, with jitter so a restarted server is not stormed.
      const delay = Math.min(MAX_RECONNECT_MS, 1000 * 2 ** failures) * (0.75 + Math.random() / 2);
      failures += 1;
      showConnection('reconnecting', `Reconnecting in ${Math.round(delay / 1000)} s…`);
      retryTimer = setTimeout(connect, delay);
    });
  }

  window.addEventListener('online', () => {
    if (retryTimer) {
      clearTimeout(retryTimer);
      connect();
    }
  });
  showConnection('connecting', 'Connecting…');
  connect();

  // For the browser tests and the console: the canvas has no DOM to inspect.
  element.liveMap = {
    map,
    vehicle: (id) => vehicles.get(id)?.data,
    marker: (id) => vehicles.get(id)?.marker,
    isDrawn: (id) => Boolean(vehicles.get(id)?.marker?._map),
  };
}

// Last, so that everything above is initialised when it runs.
const mapElement = document.getElementById('live-map');
if (mapElement && L) {
  start(mapElement);
}
