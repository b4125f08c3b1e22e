/**
 * The chart of a report: bars (stacked for business/private km) drawn with uPlot from
 * the json_script #report-chart-data the page renders with the table:
 * {labels: [...], x_label, unit, stacked, series: [{key, label, values, color}]}.
 */

const uPlot = window.uPlot;
const HEIGHT = 260;

function start(element, spec) {
  const labels = spec.labels;
  const n = labels.length;
  const x = labels.map((_, i) => i);
  // Stacked bars: each series is drawn up to the sum of itself and those before it, the
  // tallest first, so each shows as its own slice; the legend shows the real values.
  const order = spec.stacked ? [...spec.series].reverse() : spec.series;
  const raw = order.map((s) => s.values);
  let drawn = raw;
  if (spec.stacked) {
    const sums = spec.series.map((_, k) => x.map((i) => spec.series.slice(0, k + 1)
      .reduce((total, s) => total + (s.values[i] || 0), 0)));
    drawn = sums.reverse();
  }
  const unit = spec.unit ? ` ${spec.unit}` : '';
  const bars = uPlot.paths.bars({ size: [spec.stacked ? 0.75 : 0.7, 64], align: 0 });

  function splits(u) {
    const fit = Math.max(1, Math.floor(u.bbox.width / devicePixelRatio / 64));
    const step = Math.max(1, Math.ceil(n / fit));
    return x.filter((i) => i % step === 0);
  }

  const options = {
    width: Math.max(240, element.clientWidth),
    height: HEIGHT,
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    legend: { live: true },
    scales: {
      x: { time: false, range: () => [-0.5, n - 0.5] },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] },
    },
    series: [
      { label: spec.x_label || '', value: (u, i) => (i == null ? '' : labels[i] ?? '') },
      ...order.map((s, k) => ({
        label: s.label,
        stroke: s.color,
        fill: s.color,
        width: 0,
        paths: bars,
        points: { show: false },
        value: (u, v, si, i) => (i == null || raw[k][i] == null ? '—' : `${raw[k][i]}${unit}`),
      })),
    ],
    axes: [
      {
        stroke: '#6b7785', grid: { show: false }, ticks: { stroke: '#e3e7eb' },
        splits, values: (u, values) => values.map((i) => labels[i] ?? ''),
      },
      {
        stroke: '#6b7785', grid: { stroke: '#eef1f4' }, ticks: { stroke: '#e3e7eb' }, size: 56,
        label: spec.unit || undefined, labelSize: 18,
      },
    ],
  };
  const plot = new uPlot(options, [x, ...drawn], element);
  if (spec.stacked) {
    // Drawn tallest first, listed in the table's order (uPlot keeps its own references
    // to the legend's rows, so moving them is safe).
    const rows = [...plot.root.querySelectorAll('.u-legend .u-series')].slice(1);
    for (const row of rows.reverse()) row.parentNode.append(row);
  }
  new ResizeObserver(() => {
    const width = element.clientWidth;
    if (width && Math.abs(width - plot.width) > 1) plot.setSize({ width, height: HEIGHT });
  }).observe(element);
  element.chart = plot; // for the browser tests and the console
  element.dataset.state = 'ready';
}

const chartElement = document.getElementById('report-chart');
const data = document.getElementById('report-chart-data');
if (chartElement && data && uPlot) {
  start(chartElement, JSON.parse(data.textContent));
}
