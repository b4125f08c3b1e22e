/**
 * The replay page: a vehicle's track for a period, coloured by speed, with a marker that
 * plays it back (play/pause, a speed factor, a slider to seek) and the stops marked.
 *
 * The track comes as JSON from data-track-url (columns of fixes, the index where each
 * unbroken run starts, stops, a summary). Configuration comes from data- attributes on
 * #replay-map, never an inline script. The track is drawn on one canvas: consecutive
 * steps in the same speed band are one polyline, so a day of fixes is a few hundred
 * lines. Positions the user may not see (private trips) are not in the data at all.
 */

const L = window.L;

const GAP_S = 300; // fixes further apart are not interpolated between (a silence)
const JUMP_M = 200; // a silence that moved the vehicle further is drawn dashed grey
const FOLLOW_PAD = -0.2; // pan when the marker leaves the middle 60 % of the map

// --- Small helpers -------------------------------------------------------------------

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function formatter(timeZone, withDate) {
  const options = { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false };
  if (withDate) Object.assign(options, { year: 'numeric', month: '2-digit', day: '2-digit' });
  try {
    return new Intl.DateTimeFormat('sv-SE', { ...options, timeZone });
  } catch {
    return new Intl.DateTimeFormat('sv-SE', options);
  }
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

function metres(a, b) {
  const rad = Math.PI / 180;
  const x = (b[1] - a[1]) * rad * Math.cos(((a[0] + b[0]) / 2) * rad);
  const y = (b[0] - a[0]) * rad;
  return Math.sqrt(x * x + y * y) * 6371000;
}

function bearing(a, b) {
  const rad = Math.PI / 180;
  const y = Math.sin((b[1] - a[1]) * rad) * Math.cos(b[0] * rad);
  const x = Math.cos(a[0] * rad) * Math.sin(b[0] * rad)
    - Math.sin(a[0] * rad) * Math.cos(b[0] * rad) * Math.cos((b[1] - a[1]) * rad);
  return (Math.atan2(y, x) / rad + 360) % 360;
}

// The last index i with times[i] <= t (-1 before the first).
function indexAt(times, t) {
  let lo = 0;
  let hi = times.length - 1;
  if (hi < 0 || t < times[0]) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (times[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// --- The page ------------------------------------------------------------------------

function start(element) {
  const config = element.dataset;
  const zone = config.timeZone || 'UTC';
  const play = document.getElementById('replay-play');
  const slider = document.getElementById('replay-slider');
  const factor = document.getElementById('replay-factor');
  const skip = document.getElementById('replay-skip');
  const clock = document.getElementById('replay-clock');
  const readout = document.getElementById('replay-readout');
  const timeline = document.getElementById('replay-timeline');
  const status = document.getElementById('replay-status');
  const stopList = document.getElementById('replay-stops');

  const map = L.map(element, { preferCanvas: true, maxZoom: 19, zoomControl: true });
  if (config.tileUrl) {
    L.tileLayer(config.tileUrl, { maxZoom: 19, attribution: config.tileAttribution || '' })
      .addTo(map);
  } else {
    element.classList.add('no-tiles');
  }
  map.setView([51, 10], 4);
  const api = { map, ready: false };
  element.replay = api; // for the browser tests and the console

  fetch(config.trackUrl, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
    .then((response) => {
      if (!response.ok) throw new Error(`The track did not load (${response.status}).`);
      return response.json();
    })
    .then((data) => show(data))
    .catch((error) => {
      status.textContent = error.message;
      element.dataset.state = 'error';
    });

  function show(data) {
    const f = data.fixes;
    const n = f.t.length;
    const colours = data.speed_bands.map((_, i) => cssVar(`--speed-${i}`, '#0b6bcb'));
    const bandOf = (kmh) => {
      let band = 0;
      for (let i = 0; i < data.speed_bands.length; i += 1) {
        if ((kmh || 0) >= data.speed_bands[i]) band = i;
      }
      return band;
    };
    const runStart = new Uint8Array(n);
    for (const i of data.runs) runStart[i] = 1;
    const latlng = (i) => [f.lat[i], f.lon[i]];
    const joined = (i) => i + 1 < n && !runStart[i + 1]; // i and i + 1 in one run
    const silent = (i) => f.t[i + 1] - f.t[i] > GAP_S;

    fillSummary(data);
    if (!n) {
      status.textContent = data.summary.private_trips_hidden
        ? 'No positions you may see in this period.' : 'No positions in this period.';
      element.dataset.state = 'empty';
      return;
    }
    status.hidden = true;

    // The track: a white casing per run, then one polyline per run of one speed band.
    const renderer = L.canvas({ padding: 0.3, tolerance: 3 });
    const runs = [...data.runs, n];
    const casing = [];
    for (let r = 0; r + 1 < runs.length; r += 1) {
      const points = [];
      for (let i = runs[r]; i < runs[r + 1]; i += 1) points.push(latlng(i));
      casing.push(points);
    }
    L.polyline(casing, {
      renderer, color: '#fff', weight: 8, opacity: 0.85, interactive: false,
      lineJoin: 'round', lineCap: 'round',
    }).addTo(map);
    const pieces = new Map(); // key -> array of line point lists
    let current = null;
    let currentKey = null;
    for (let i = 0; i + 1 < n; i += 1) {
      if (!joined(i)) { current = null; currentKey = null; continue; }
      const jump = silent(i) && metres(latlng(i), latlng(i + 1)) > JUMP_M;
      const key = jump ? 'gap' : bandOf(Math.max(f.speed[i] || 0, f.speed[i + 1] || 0));
      if (key !== currentKey) {
        current = [latlng(i)];
        currentKey = key;
        if (!pieces.has(key)) pieces.set(key, []);
        pieces.get(key).push(current);
      }
      current.push(latlng(i + 1));
    }
    for (const [key, lines] of pieces) {
      const gap = key === 'gap';
      L.polyline(lines, {
        renderer, interactive: false, lineJoin: 'round', lineCap: 'round',
        color: gap ? '#8c96a0' : colours[key], weight: gap ? 3 : 5, opacity: 0.95,
        dashArray: gap ? '6 8' : null,
      }).addTo(map);
    }
    const bounds = L.latLngBounds(f.lat.map((lat, i) => [lat, f.lon[i]]));
    map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 });

    // Start, end and stops.
    const format = formatter(zone, data.to - data.from > 86400);
    const formatTime = formatter(zone, false);
    const hhmm = (t) => formatTime.format(new Date(t * 1000)).slice(0, 5);
    L.circleMarker(latlng(0), {
      renderer, radius: 6, color: '#fff', weight: 2, fillColor: '#1f9d55', fillOpacity: 1,
    }).bindTooltip(`Start ${format.format(new Date(f.t[0] * 1000))}`).addTo(map);
    L.circleMarker(latlng(n - 1), {
      renderer, radius: 6, color: '#fff', weight: 2, fillColor: '#d64545', fillOpacity: 1,
    }).bindTooltip(`End ${format.format(new Date(f.t[n - 1] * 1000))}`).addTo(map);

    const stopMarkers = data.stops.map((stop, k) => {
      const until = stop.open ? 'still there' : hhmm(stop.end);
      const text = `Stop ${k + 1}: ${hhmm(stop.start)}–${until} (${formatDuration(stop.duration_s)})`;
      const marker = L.marker([stop.lat, stop.lon], {
        icon: L.divIcon({ className: 'replay-stop', html: String(k + 1), iconSize: [22, 22] }),
        title: text, keyboard: false, riseOnHover: true,
      }).bindTooltip(text).addTo(map);
      marker.on('click', () => seek(stop.start, { pan: false }));
      const item = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      const number = document.createElement('span');
      number.className = 'n';
      number.textContent = String(k + 1);
      const when = document.createElement('span');
      when.className = 'when';
      when.textContent = `${format.format(new Date(stop.start * 1000)).slice(0, -3)} – ${until}`;
      const long = document.createElement('span');
      long.className = 'long';
      long.textContent = formatDuration(stop.duration_s);
      button.append(number, when, long);
      button.addEventListener('click', () => {
        seek(stop.start, { pan: true });
      });
      item.append(button);
      stopList.append(item);
      return { marker, item };
    });
    document.getElementById('replay-no-stops').hidden = data.stops.length > 0;

    // The moving marker.
    const vehicleIcon = L.divIcon({
      className: 'replay-vehicle', html: '<span class="arrow"></span>', iconSize: [32, 32],
    });
    const marker = L.marker(latlng(0), {
      icon: vehicleIcon, zIndexOffset: 1000, keyboard: false, interactive: false,
    }).addTo(map);

    // --- Time ---------------------------------------------------------------------
    const t0 = f.t[0];
    const tEnd = f.t[n - 1];
    slider.max = String(Math.max(1, Math.ceil(tEnd - t0)));
    slider.disabled = false;
    play.disabled = false;
    let time = t0;
    let playing = false;
    let lastFrame = null;
    let currentStop = -1;

    function stateAt(t) {
      const i = Math.max(0, indexAt(f.t, t));
      let position = latlng(i);
      let speed = f.speed[i];
      let stale = t - f.t[i] > GAP_S;
      let course = f.course[i];
      if (joined(i) && !silent(i) && t > f.t[i]) {
        const share = (t - f.t[i]) / (f.t[i + 1] - f.t[i]);
        const next = latlng(i + 1);
        position = [position[0] + (next[0] - position[0]) * share,
          position[1] + (next[1] - position[1]) * share];
        if (speed != null && f.speed[i + 1] != null) speed += (f.speed[i + 1] - speed) * share;
        stale = false;
      }
      if (course == null) {
        if (joined(i) && metres(latlng(i), latlng(i + 1)) > 2) course = bearing(latlng(i), latlng(i + 1));
        else if (i > 0 && !runStart[i] && metres(latlng(i - 1), latlng(i)) > 2) course = bearing(latlng(i - 1), latlng(i));
      }
      return { index: i, position, speed, course, stale, ignition: f.ignition[i] };
    }

    function stopAt(t) {
      return data.stops.findIndex((s) => t >= s.start && t < s.end);
    }

    function render(t, { pan }) {
      const state = stateAt(t);
      marker.setLatLng(state.position);
      const icon = marker.getElement();
      if (icon) {
        icon.classList.toggle('stale', state.stale);
        icon.classList.toggle('no-course', state.course == null);
        // A teardrop whose point is its top-left corner (-45°): turned by 45° more, north.
        icon.firstChild.style.transform = `rotate(${(state.course ?? 0) + 45}deg)`;
      }
      clock.textContent = format.format(new Date(t * 1000));
      slider.setAttribute('aria-valuetext', clock.textContent);
      const k = stopAt(t);
      if (k !== currentStop) {
        if (currentStop >= 0) {
          stopMarkers[currentStop].item.classList.remove('current');
          stopMarkers[currentStop].marker.getElement()?.classList.remove('current');
        }
        if (k >= 0) {
          stopMarkers[k].item.classList.add('current');
          stopMarkers[k].marker.getElement()?.classList.add('current');
        }
        currentStop = k;
      }
      let text;
      if (k >= 0) text = `Stop ${k + 1} · ${formatDuration(data.stops[k].duration_s)}`;
      else if (state.stale) text = 'No position reported';
      else {
        text = state.speed == null ? 'speed unknown' : `${Math.round(state.speed)} km/h`;
        if (state.ignition != null) text += ` · ignition ${state.ignition ? 'on' : 'off'}`;
      }
      readout.textContent = text;
      if (pan && !map.getBounds().pad(FOLLOW_PAD).contains(state.position)) {
        map.panTo(state.position, { animate: true, duration: 0.5 });
      }
      element.dataset.index = String(state.index);
    }

    function seek(t, { pan = true } = {}) {
      time = Math.min(tEnd, Math.max(t0, t));
      slider.value = String(Math.round(time - t0));
      render(time, { pan });
    }

    // While playing with "skip stops", a stop or a silence passes in an instant.
    function skipAhead(from, to) {
      if (!skip.checked) return to;
      for (const s of data.stops) {
        if (to >= s.start && to < s.end && s.end - from > 1) return s.end;
      }
      const i = indexAt(f.t, to);
      if (i >= 0 && i + 1 < n && silent(i) && f.t[i + 1] > to) return f.t[i + 1];
      return to;
    }

    function setPlaying(on) {
      playing = on;
      play.textContent = on ? '❚❚' : '▶';
      play.setAttribute('aria-label', on ? 'Pause' : 'Play');
      element.dataset.playing = String(on);
      if (on) {
        if (time >= tEnd) seek(t0);
        lastFrame = null;
        requestAnimationFrame(frame);
      }
    }

    function frame(now) {
      if (!playing) return;
      const dt = lastFrame == null ? 0 : Math.min(0.25, (now - lastFrame) / 1000);
      lastFrame = now;
      let next = skipAhead(time, time + dt * Number(factor.value));
      if (next >= tEnd) {
        next = tEnd;
        seek(next);
        setPlaying(false);
        return;
      }
      seek(next);
      requestAnimationFrame(frame);
    }

    play.addEventListener('click', () => setPlaying(!playing));
    slider.addEventListener('input', () => seek(t0 + Number(slider.value)));
    document.addEventListener('keydown', (event) => {
      if (event.key !== ' ' || event.target.closest('input:not([type=range]), select, textarea, a, button')) return;
      event.preventDefault();
      setPlaying(!playing);
    });

    // --- The timeline under the slider: speed colours, stops, silences --------------
    function drawTimeline() {
      const ratio = window.devicePixelRatio || 1;
      const width = timeline.clientWidth;
      const height = timeline.clientHeight;
      if (!width) return;
      timeline.width = Math.round(width * ratio);
      timeline.height = Math.round(height * ratio);
      const ctx = timeline.getContext('2d');
      ctx.scale(ratio, ratio);
      ctx.clearRect(0, 0, width, height);
      const x = (t) => ((t - t0) / Math.max(1, tEnd - t0)) * width;
      for (let i = 0; i + 1 < n; i += 1) {
        if (!joined(i) || silent(i)) continue;
        ctx.fillStyle = colours[bandOf(f.speed[i])];
        ctx.fillRect(x(f.t[i]), 0, Math.max(1, x(f.t[i + 1]) - x(f.t[i])), height);
      }
      ctx.fillStyle = cssVar('--stop', '#1d2733');
      for (const s of data.stops) {
        ctx.fillRect(x(s.start), height * 0.25, Math.max(2, x(Math.min(s.end, tEnd)) - x(s.start)), height * 0.5);
      }
    }
    timeline.addEventListener('click', (event) => {
      const box = timeline.getBoundingClientRect();
      seek(t0 + ((event.clientX - box.left) / box.width) * (tEnd - t0));
    });
    new ResizeObserver(drawTimeline).observe(timeline);
    drawTimeline();

    seek(t0, { pan: false });
    Object.assign(api, {
      ready: true, t0, tEnd, seek, marker,
      play: () => setPlaying(true),
      pause: () => setPlaying(false),
      state: () => ({ time, playing, index: stateAt(time).index, latlng: marker.getLatLng() }),
    });
    element.dataset.state = 'ready';
  }

  function fillSummary(data) {
    const s = data.summary;
    const box = document.getElementById('replay-summary');
    const field = (name) => box.querySelector(`[data-field="${name}"]`);
    field('distance').textContent = `${s.distance_km.toFixed(1)} km`;
    field('driving').textContent = formatDuration(s.driving_s);
    field('max_speed').textContent = `${s.max_speed_kmh} km/h`;
    field('stops').textContent = String(s.stops);
    field('fixes').textContent = s.drawn < s.fixes ? `${s.fixes} (every ${Math.ceil(s.fixes / s.drawn)}th drawn)` : String(s.fixes);
    box.hidden = false;
    const note = document.getElementById('replay-private');
    if (s.private_trips_hidden) {
      note.textContent = 'Private trips are not shown: the logbook shows their date and '
        + 'distance only, and their route, stops and times stay hidden here.';
      note.hidden = false;
    }
  }
}

const mapElement = document.getElementById('replay-map');
if (mapElement && L) {
  start(mapElement);
}
