/**
 * The live event feed over the map: the last day's events from /api/v1/events/, then
 * every new one as the websocket brings it. live-map.js owns the socket and re-dispatches
 * each message on #live-map as a `live:message` CustomEvent; this module listens for
 * `{"type": "events"}`. A click on an event with a position shows that place on the map.
 */

const MAX_ITEMS = 50;
const DAY_MS = 24 * 3600 * 1000;

function timeFormatter(timeZone) {
  const options = { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false };
  try {
    return new Intl.DateTimeFormat('sv-SE', { ...options, timeZone });
  } catch {
    return new Intl.DateTimeFormat('sv-SE', options);
  }
}

function start(mapElement, feed) {
  const items = feed.querySelector('[data-field="items"]');
  const empty = feed.querySelector('[data-field="empty"]');
  const count = feed.querySelector('[data-field="count"]');
  const toggle = feed.querySelector('[data-action="toggle"]');
  const format = timeFormatter(mapElement.dataset.timeZone || 'UTC');
  const seen = new Set();
  let unseen = 0;

  function setCollapsed(collapsed) {
    feed.classList.toggle('collapsed', collapsed);
    toggle.setAttribute('aria-expanded', String(!collapsed));
    toggle.setAttribute('aria-label', collapsed ? 'Show events' : 'Hide events');
    toggle.textContent = collapsed ? '+' : '–';
    if (!collapsed) {
      unseen = 0;
      count.hidden = true;
    }
  }

  function item(event, fresh) {
    const li = document.createElement('li');
    li.dataset.event = event.id;
    li.dataset.type = event.type;
    if (fresh) li.classList.add('fresh');
    const time = document.createElement('time');
    time.dateTime = event.time;
    time.textContent = format.format(new Date(event.time));
    const badge = document.createElement('span');
    badge.className = `event-type type-${event.type}`;
    badge.textContent = event.label;
    const what = document.createElement('span');
    what.className = 'what';
    what.textContent = event.summary;
    li.append(time, badge, what);
    const a = event.attributes || {};
    if (a.latitude != null && a.longitude != null) {
      li.title = 'Show on the map';
      li.addEventListener('click', () => {
        const live = mapElement.liveMap;
        if (live) live.map.setView([a.latitude, a.longitude], Math.max(live.map.getZoom(), 15));
      });
    }
    return li;
  }

  // Newest on top; `events` may come in any order.
  function add(events, fresh) {
    const sorted = [...events].sort((x, y) => Date.parse(y.time) - Date.parse(x.time) || y.id - x.id);
    for (const event of sorted.reverse()) {
      if (seen.has(event.id)) continue;
      seen.add(event.id);
      const li = item(event, fresh);
      const later = [...items.children].find((node) => Date.parse(node.querySelector('time').dateTime) <= Date.parse(event.time));
      items.insertBefore(li, later || null);
      if (fresh && feed.classList.contains('collapsed')) unseen += 1;
    }
    while (items.children.length > MAX_ITEMS) items.lastElementChild.remove();
    empty.hidden = items.children.length > 0;
    if (unseen) {
      count.textContent = String(unseen);
      count.hidden = false;
    }
  }

  async function load() {
    const from = new Date(Date.now() - DAY_MS).toISOString();
    const url = `${feed.dataset.api}?order=desc&page_size=${MAX_ITEMS}&from=${encodeURIComponent(from)}`;
    const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const page = await response.json();
    add(page.results, false);
  }

  toggle.addEventListener('click', () => setCollapsed(!feed.classList.contains('collapsed')));
  mapElement.addEventListener('live:message', (event) => {
    if (event.detail && event.detail.type === 'events') add(event.detail.events, true);
  });
  if (window.matchMedia('(max-width: 760px)').matches) setCollapsed(true);
  load().catch((failure) => console.warn('Events could not be loaded:', failure.message));
}

const mapElement = document.getElementById('live-map');
const feed = document.getElementById('event-feed');
if (mapElement && feed) start(mapElement, feed);
