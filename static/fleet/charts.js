/**
 * A vehicle's signal history (speed, fuel level, engine speed, coolant temperature) as
 * time-series charts drawn with uPlot (vendored in static/vendor/uplot/).
 *
 * The series come as JSON from #charts's data-url (epoch seconds and values, a null
 * where the line breaks: a silence, or a private trip the user may not see). One chart
 * per signal, one under the other on a phone; the cursor and a drag-to-zoom are shared.
 */

const uPlot = window.uPlot;

const COLOURS = {
  vehicle_speed: '#0b6bcb',
  fuel_level: '#1f9d55',
  engine_speed: '#a05cb8',
  coolant_temperature: '#d64545',
};
const DECIMALS = { vehicle_speed: 0, fuel_level: 1, engine_speed: 0, coolant_temperature: 0 };
const HEIGHT = 220;

function card(parent, s) {
  const section = document.createElement('section');
  section.className = 'card chart-card';
  section.dataset.signal = s.key;
  const title = document.createElement('h2');
  title.textContent = `${s.label} `;
  const unit = document.createElement('span');
  unit.className = 'muted';
  unit.textContent = `(${s.unit}${s.source ? `, ${s.source}` : ''})`;
  title.append(unit);
  const chart = document.createElement('div');
  chart.className = 'chart';
  section.append(title, chart);
  parent.append(section);
  return { section, chart };
}

// Time-axis labels in 24-hour ISO style in the organisation's zone, like the rest of the
// site: "06:00", with the date under the first label and under each midnight.
function timeLabels(zone) {
  const part = (options) => {
    try {
      return new Intl.DateTimeFormat('sv-SE', { ...options, timeZone: zone });
    } catch {
      return new Intl.DateTimeFormat('sv-SE', options);
    }
  };
  const clock = part({ hour: '2-digit', minute: '2-digit', hour12: false });
  const dayParts = part({ month: '2-digit', day: '2-digit' });
  const day = (date) => {
    const parts = Object.fromEntries(dayParts.formatToParts(date).map((p) => [p.type, p.value]));
    return `${parts.month}-${parts.day}`; // "05-06", as the reports write days
  };
  return (u, splits, axisIdx, space, increment) => splits.map((ts, i) => {
    const date = new Date(ts * 1000);
    const hhmm = clock.format(date);
    if (increment >= 86400) return day(date);
    return i === 0 || hhmm === '00:00' ? `${hhmm}\n${day(date)}` : hhmm;
  });
}

function start(element) {
  const status = document.getElementById('charts-status');
  const zone = element.dataset.timeZone || 'UTC';
  fetch(element.dataset.url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
    .then((response) => {
      if (!response.ok) throw new Error(`The signals did not load (${response.status}).`);
      return response.json();
    })
    .then((data) => draw(data))
    .catch((error) => {
      status.textContent = error.message;
      element.dataset.state = 'error';
    });

  function draw(data) {
    const plots = [];
    let zooming = false;
    const sync = uPlot.sync('fleetbook-signals');
    const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1000), zone);
    const withData = data.series.filter((s) => s.points > 0);
    const without = data.series.filter((s) => !s.points).map((s) => s.label);
    status.textContent = withData.length
      ? `No data in this period: ${without.join(', ')}.` : 'No signals in this period.';
    status.hidden = !without.length;
    status.classList.add('small');
    element.after(status); // under the charts

    for (const s of withData) {
      const { chart } = card(element, s);
      const colour = COLOURS[s.key] || '#0b6bcb';
      const decimals = DECIMALS[s.key] ?? 1;
      const options = {
        width: Math.max(200, chart.clientWidth),
        height: HEIGHT,
        tzDate,
        cursor: { sync: { key: sync.key }, drag: { x: true, y: false } },
        scales: { x: { time: true, range: () => [data.from, data.to] } },
        legend: { live: true },
        series: [
          { label: 'Time', value: '{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}' },
          {
            label: s.label, stroke: colour, width: 1.6, fill: `${colour}1f`, spanGaps: false,
            points: { size: 5 }, // uPlot shows them only where the samples are sparse
            value: (u, v) => (v == null ? '—' : `${v.toFixed(decimals)} ${s.unit}`),
          },
        ],
        axes: [
          {
            stroke: '#6b7785', grid: { stroke: '#eef1f4' }, ticks: { stroke: '#e3e7eb' },
            values: timeLabels(zone), space: 60,
          },
          {
            stroke: '#6b7785', grid: { stroke: '#eef1f4' }, ticks: { stroke: '#e3e7eb' }, size: 56,
            values: (u, splits) => splits.map((v) => `${v}`),
          },
        ],
        hooks: {
          setScale: [(u, key) => {
            if (key !== 'x' || zooming) return;
            zooming = true;
            const { min, max } = u.scales.x;
            for (const other of plots) {
              if (other !== u) other.setScale('x', { min, max });
            }
            zooming = false;
          }],
        },
      };
      const plot = new uPlot(options, [s.t, s.v], chart);
      plot.signal = s.key;
      plots.push(plot);
      new ResizeObserver(() => {
        const width = chart.clientWidth;
        if (width && Math.abs(width - plot.width) > 1) plot.setSize({ width, height: HEIGHT });
      }).observe(chart);
    }
    element.charts = plots; // for the browser tests and the console
    element.dataset.state = 'ready';
  }
}

const chartsElement = document.getElementById('charts');
if (chartsElement && uPlot) {
  start(chartsElement);
}
