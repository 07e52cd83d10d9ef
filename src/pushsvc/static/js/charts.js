// Charts drawn with uPlot (vendored under dashboard/vendor/, a global `uPlot`): a small
// line per topic in the overview; per window, mean/p50/p90/p99 over time with the min–max
// band shaded, the count below, and for a window that counts messages its messages per second
// by type, a line each (`messageChart`). x is the update's `ts` (the topic clock, seconds), over
// the x-range the view's `xRange()` gives (a range of the topic clock, ending at it). A
// window's charts also shade the x-ranges their `shaded()` gives (where an alert fired),
// behind the grid and the lines. Series buckets are drawn at one resolution to the right
// edge: what the server has not closed yet is gathered into buckets of that resolution and
// drawn apart, dashed, as what it is so far (`seriesColumns`).
// A group's sparkline in the groups table is a plain SVG path (`sparkPath`): a table may
// have hundreds of rows, and a canvas chart per row would cost far more than a path.

import { formatNumber } from "./format.js";

export const LINES = ["mean", "p50", "p90", "p99"];

/** What a window's (or a range's) charts draw of the statistics `kept` (the names its rule
 *  keeps; null: every one): `extremes`, the kept of min and max (shaded between them as a
 *  band when both are), the lines among LINES, the count, and for a range's buckets not
 *  closed yet the mean so far (`meanSoFar`, with the mean). A chart, its legend, caption and
 *  table name nothing the rule does not keep: a line of "—" said the topic had a p99 it
 *  never computes, and a range's p90 from the series (whose points have every statistic)
 *  that it had one. */
export function chartLayout(kept = null) {
  const has = (stat) => kept === null || kept.includes(stat);
  const extremes = ["min", "max"].filter(has);
  return {
    extremes, lines: LINES.filter(has), band: extremes.length === 2, count: has("count"),
    meanSoFar: has("mean"),
  };
}

/** The caption of a chart of `layout`: "mean, p50, p90, p99; min–max shaded; count below". */
export function layoutCaption(layout) {
  const parts = [];
  if (layout.lines.length) parts.push(layout.lines.join(", "));
  if (layout.band) parts.push("min–max shaded");
  else if (layout.extremes.length) parts.push(layout.extremes[0]);
  if (layout.count) parts.push("count below");
  return parts.join("; ");
}

const FULL = chartLayout();

function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return {
    text: v("--muted"), grid: v("--line"), accent: v("--accent"), band: v("--band"),
    bandEdge: v("--band-edge"), alertBand: v("--alert-band"), alertEdge: v("--danger"),
    anomalyBand: v("--anomaly-band"), anomalyEdge: v("--anomaly-edge"),
    forecastBand: v("--forecast-band"), forecastBand80: v("--forecast-band-80"),
    forecastLine: v("--forecast-line"),
    mean: v("--accent"), p50: v("--ok"), p90: v("--warn"), p99: v("--danger"), count: v("--muted"),
  };
}

// Time labels: one line each, in the reader's 24-hour clock as the page's other times, of one
// width for a given step, and at least TIME_SPACE px apart, so that no label runs into the
// next (uPlot's own put the date under the first one, wider than the room to the next).
const H23 = { hourCycle: "h23" };
const SECONDS = new Intl.DateTimeFormat(undefined, { ...H23, hour: "2-digit", minute: "2-digit", second: "2-digit" });
const MINUTES = new Intl.DateTimeFormat(undefined, { ...H23, hour: "2-digit", minute: "2-digit" });
const DAYS = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const TIME_SPACE = 80;
// The steps time ticks may take (seconds): round ones on the clock and the calendar.
const TIME_STEPS = [
  1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200,
  86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400,
];

/** Labels of the time ticks `splits` (epoch seconds) `step` seconds apart: hh:mm:ss below a
 *  minute, hh:mm below a day (the date at midnight), else the date. */
export function timeLabels(splits, step) {
  return splits.map((split) => {
    const date = new Date(split * 1000);
    if (step >= 86400) return DAYS.format(date);
    const midnight = date.getHours() === 0 && date.getMinutes() === 0 && date.getSeconds() === 0;
    if (midnight && step >= 60) return DAYS.format(date);
    return (step < 60 ? SECONDS : MINUTES).format(date);
  });
}

function axes(colors, valueWidth) {
  const grid = { stroke: colors.grid, width: 1 };
  return [
    {
      stroke: colors.text, grid, ticks: grid, space: TIME_SPACE, size: 28, incrs: TIME_STEPS,
      values: (_u, splits, _axis, _space, step) => timeLabels(splits, step),
    },
    {
      stroke: colors.text, grid, ticks: grid, size: valueWidth,
      values: (_u, ticks) => ticks.map((t) => formatNumber(t)),
    },
  ];
}

/** An x scale over `xRange()` ([min, max], or null: the data's). */
function timeScale(xRange) {
  return {
    time: true,
    range: (_u, min, max) => {
      const chosen = xRange();
      if (chosen !== null) return chosen;
      if (min === null || max === null) return [0, 1];
      return min === max ? [min - 1, max + 1] : [min, max];
    },
  };
}

const STATS = ["min", "max", "count", ...LINES];

function emptyColumns() {
  // gap: the null row breaking the lines where updates were missed (its table row says so)
  // messages: a closed series bucket's messages by type (its point's `messages`, {} for none),
  // null on any other row
  const cols = { ts: [], ids: [], soFar: [], meanSoFar: [], countSoFar: [], gap: [], messages: [] };
  for (const key of STATS) cols[key] = [];
  return cols;
}

function pushRow(cols, ts, id, stats, soFar = null) {
  cols.ts.push(ts);
  cols.ids.push(id);
  for (const key of STATS) cols[key].push(stats ? stats[key] ?? null : null);
  cols.soFar.push(soFar !== null);
  cols.meanSoFar.push(soFar ? soFar.mean : null);
  cols.countSoFar.push(soFar ? soFar.count : null);
  cols.gap.push(false);
  cols.messages.push(null);
}

/** The columns uPlot draws for one window: [ts, min, max, mean, p50, p90, p99] and
 *  [ts, count]; a null row before a point that follows a gap breaks the lines there. */
export function windowColumns(points, window) {
  const cols = emptyColumns();
  for (const point of points) {
    if (point.gapBefore) {
      pushRow(cols, point.ts, null, null);
      cols.gap[cols.gap.length - 1] = true;
    }
    pushRow(cols, point.ts, point.id.text, point.windows[window] || {});
  }
  return cols;
}

/** Series points ({t, resolution, count, sum, mean, ...}: closed buckets) as columns at one
 *  resolution, `width` seconds (the coarsest tier asked for; by default the coarsest here):
 *  each bucket of that width at its start. Finer points — the finer tiers' closed buckets
 *  that stand in for the recent part the coarse tier has not closed, or single values
 *  ({t, count: 1, sum: value}) — are gathered into the bucket of `width` they fall in, and
 *  that bucket is drawn apart (`soFar`, `meanSoFar`, `countSoFar`), for what it is so far: its
 *  count and mean (sum over count); its extremes, spread and percentiles are unknown until it
 *  closes. A second's bucket among minutes, its count a sixtieth of theirs, or a raw value
 *  among means, made every chart spike at its right edge. The so-far line starts at the
 *  newest closed bucket, so the two meet. Where two buckets or more in a row had no event, a
 *  null row breaks the lines (an idle stretch), as a gap does for updates. */
export function seriesColumns(points, widthOf, width = null) {
  const widest = width ?? Math.max(0, ...points.map((p) => widthOf(p.resolution) || 0));
  const closed = [];
  const gathered = new Map();
  for (const point of points) {
    if (widthOf(point.resolution) >= widest) {
      closed.push(point);
      continue;
    }
    const t = point.t - (point.t % widest);
    const bucket = gathered.get(t) || { t, count: 0, sum: 0 };
    bucket.count += point.count;
    bucket.sum += point.sum;
    gathered.set(t, bucket);
  }
  const held = new Set(closed.map((p) => p.t));
  const soFar = [...gathered.values()].filter((b) => !held.has(b.t) && b.count > 0);
  const rows = [...closed, ...soFar.map((b) => ({ ...b, soFar: { count: b.count, mean: b.sum / b.count } }))]
    .sort((a, b) => a.t - b.t);
  const cols = emptyColumns();
  let end = null;
  let joined = false;
  rows.forEach((row, i) => {
    if (end !== null && row.t > end + widest) pushRow(cols, end, null, null);
    if (row.soFar) {
      pushRow(cols, row.t, `so-far@${row.t}`, null, row.soFar);
    } else {
      const next = rows[i + 1];
      // The newest closed bucket before what is so far: where the dashed line starts.
      const join = next !== undefined && next.soFar && !joined;
      pushRow(cols, row.t, `${row.resolution}@${row.t}`, row, join ? row : null);
      cols.soFar[cols.soFar.length - 1] = false;
      cols.messages[cols.messages.length - 1] = row.messages || {};
      if (join) joined = true;
    }
    end = row.t + widest;
  });
  return cols;
}

/** A tile's last hour, within an hour of `clock`, at one resolution: the coarsest of
 *  `buckets` (the series' answer: {t, resolution, count, sum, mean}). The closed buckets'
 *  means at their starts, then — apart, as their means so far — the buckets the server has
 *  not closed, gathered from the finer buckets and from the values of the updates since the
 *  newest bucket (`seriesColumns`): [ts, means, means so far]. A bucket some of whose values
 *  since may be missing from `points` (`unheldUntil`) has no mean so far: the mean of part
 *  of its events would be drawn as if it were all of them. Without buckets (no series, or
 *  none closed yet), the values themselves, and nothing so far. */
export function hourColumns(buckets, points, clock, widthOf) {
  const from = clock === null ? -Infinity : clock - 3600;
  if (buckets.length === 0) {
    const [ts, values] = sparkColumns(points.filter((p) => p.ts >= from));
    return [ts, values, values.map(() => null)];
  }
  let end = -Infinity;
  for (const bucket of buckets) end = Math.max(end, bucket.t + widthOf(bucket.resolution));
  const width = Math.max(0, ...buckets.map((b) => widthOf(b.resolution) || 0));
  const unheld = unheldUntil(points, end);
  // Whether the bucket of `width` that `t` falls in can be gathered whole: it ends by `end`
  // (all of it in the finer buckets), or it starts after any value `points` may lack.
  const whole = (t) => {
    const start = t - (t % width);
    return start + width <= end || start > unheld;
  };
  const finer = buckets.filter((b) => widthOf(b.resolution) >= width || whole(b.t));
  const values = points
    .filter((p) => p.value !== null && (p.eventTs ?? p.ts) >= end && whole(p.eventTs ?? p.ts))
    .map((p) => ({ t: p.eventTs ?? p.ts, resolution: null, count: 1, sum: p.value }));
  const cols = seriesColumns([...finer, ...values], widthOf, width);
  const ts = [];
  const means = [];
  const soFar = [];
  cols.ts.forEach((t, i) => {
    if (t < from) return;
    ts.push(t);
    means.push(cols.mean[i]);
    soFar.push(cols.meanSoFar[i]);
  });
  return [ts, means, soFar];
}

/** The newest event time up to which events at or after `end` may be missing from `points`
 *  (a topic's updates, in order; -Infinity: none may be). The series' buckets hold the
 *  events before `end`; those since come only from the updates, and until the topic's
 *  history arrives (or where it does not reach back, or after a gap) the page lacks some.
 *  An update whose topic clock is before `end` came before every event at or after `end`
 *  (the clock is the newest event time taken so far): from it on, with no gap between, the
 *  points hold them all. Otherwise what came before the oldest point held, or
 *  before a gap, may be missing: events no newer than the clock of the update after them. */
function unheldUntil(points, end) {
  for (let i = points.length - 1; i >= 0; i--) {
    if (points[i].ts < end) return -Infinity;
    if (points[i].gapBefore) return points[i].ts;
  }
  return points.length ? points[0].ts : Infinity;
}

export function sparkColumns(points) {
  const ts = [];
  const values = [];
  for (const point of points) {
    if (point.value === null) continue; // ticks carry no event
    if (point.gapBefore) { ts.push(point.ts); values.push(null); }
    ts.push(point.ts);
    values.push(point.value);
  }
  return [ts, values];
}

/** A tile's chart: its values, then (dashed) its means so far; over `xRange()`. */
export function sparkChart(target, width, xRange = () => null) {
  const colors = palette();
  const chart = new uPlot({
    width, height: 48, class: "spark-chart",
    legend: { show: false }, cursor: { show: false }, select: { show: false },
    scales: { x: timeScale(xRange) },
    axes: [{ show: false }, { show: false }],
    series: [
      {},
      { label: "mean", stroke: colors.accent, width: 1.5, points: { show: false } },
      { label: "mean so far", stroke: colors.accent, width: 1.5, dash: [3, 3], points: { show: false } },
    ],
  }, [[], [], []], target);
  target.uplot = chart; // its data and scales, for the tests and a curious developer's console
  return chart;
}

/** A hook filling each range `ranges()` gives ({from, to}: x values; `to` null for "to the
 *  right edge") over the plot area, faintly, with a solid strip along its top in `edge`. On
 *  drawClear, so the grid and the series come over it. The fill is light and the strip says
 *  where an alert fired: a fill strong enough to say it alone drowned the min–max band. */
function shadeRanges(ranges, fill, edge) {
  return (u) => {
    const { left, top, width, height } = u.bbox;
    const right = left + width;
    const strip = Math.max(2, Math.round(3 * (window.devicePixelRatio || 1)));
    u.ctx.save();
    for (const { from, to } of ranges()) {
      const x0 = Math.max(left, u.valToPos(from, "x", true));
      const x1 = to === null ? right : Math.min(right, u.valToPos(to, "x", true));
      // At least a device pixel wide: a range that began and ended at one time still shows.
      if (x1 < x0) continue;
      u.ctx.fillStyle = fill;
      u.ctx.fillRect(x0, top, Math.max(x1 - x0, 1), height);
      // On whole pixels: a strip's antialiased edge would be a faint column of the fill's hue.
      const [s0, s1] = [Math.round(x0), Math.round(x1)];
      u.ctx.fillStyle = edge;
      u.ctx.fillRect(s0, top, Math.max(s1 - s0, 1), strip);
    }
    u.ctx.restore();
  };
}

/** A forecast (`GET /topics/{t}/forecast`: points of `t` in ms, `mean`, `lo80`..`hi95`) drawn
 *  ahead of the line: its 95 % and 80 % intervals as bands, its mean as a dashed line. */
function drawForecast(forecast, colors) {
  return (u) => {
    const points = forecast()?.points ?? [];
    if (!points.length) return;
    const { left, top, width, height } = u.bbox;
    const x = (p) => u.valToPos(p.t / 1000, "x", true);
    const y = (v) => u.valToPos(v, "y", true);
    const ctx = u.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    for (const [lo, hi, fill] of [["lo95", "hi95", colors.forecastBand], ["lo80", "hi80", colors.forecastBand80]]) {
      ctx.beginPath();
      points.forEach((p, i) => (i ? ctx.lineTo(x(p), y(p[hi])) : ctx.moveTo(x(p), y(p[hi]))));
      for (const p of [...points].reverse()) ctx.lineTo(x(p), y(p[lo]));
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
    }
    const dpr = window.devicePixelRatio || 1;
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(x(p), y(p.mean)) : ctx.moveTo(x(p), y(p.mean))));
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    ctx.lineWidth = 2 * dpr;
    ctx.strokeStyle = colors.forecastLine;
    ctx.stroke();
    ctx.restore();
  };
}

/** The data a window chart draws from columns (`windowColumns`, `seriesColumns`); with
 *  `soFar`, for a chart of series buckets, the mean so far too. */
export function windowData(cols, soFar = false, layout = FULL) {
  const data = [cols.ts, ...layout.extremes.map((e) => cols[e]), ...layout.lines.map((l) => cols[l])];
  return soFar && layout.meanSoFar ? [...data, cols.meanSoFar] : data;
}

export function countData(cols, soFar = false) {
  return soFar ? [cols.ts, cols.count, cols.countSoFar] : [cols.ts, cols.count];
}

/** Per window (or range), mean, p50, p90 and p99 with the min–max band (those of them
 *  `layout` has); with `soFar` (a chart of series buckets), dashed, the mean of the buckets
 *  not closed yet. `anomalies()`: the x-ranges of anomalous series buckets, shaded in their
 *  own colour (a range chart of a rule that scores anomalies). `forecast()`: the series'
 *  latest forecast, drawn ahead of the line (`drawForecast`; a rule's `forecast`). */
export function windowChart(
  target, width, syncKey, shaded, xRange = () => null, soFar = false, layout = FULL,
  anomalies = () => [], forecast = () => null,
) {
  const colors = palette();
  // The band's edges, drawn: in the band's own faint colour they vanished under alert shading.
  const band = layout.extremes.map((label) => ({
    label, stroke: colors.bandEdge, width: 1, value: (_u, v) => formatNumber(v),
  }));
  const chart = new uPlot({
    width, height: 220, class: "window-chart",
    cursor: { sync: { key: syncKey } },
    hooks: {
      drawClear: [
        shadeRanges(anomalies, colors.anomalyBand, colors.anomalyEdge),
        shadeRanges(shaded, colors.alertBand, colors.alertEdge),
      ],
      draw: [drawForecast(forecast, colors)],
    },
    scales: { x: timeScale(xRange), ...(soFar ? { y: { range: forecastRange(forecast) } } : {}) },
    axes: axes(colors, 64),
    series: [
      {},
      ...band,
      ...layout.lines.map((line) => ({
        label: line, stroke: colors[line], width: line === "mean" ? 2 : 1.25,
        value: (_u, v) => formatNumber(v),
      })),
      ...(soFar && layout.meanSoFar ? [{
        label: "mean so far", stroke: colors.mean, width: 2, dash: [4, 4],
        value: (_u, v) => formatNumber(v),
      }] : []),
    ],
    bands: layout.band ? [{ series: [2, 1], fill: colors.band }] : [],
  }, windowData(emptyColumns(), soFar, layout), target);
  target.uplot = chart; // its scales, for the tests and a curious developer's console
  return chart;
}

/** The y range: uPlot's own (`snapNumY`: the data's, padded by a tenth), over the data and
 *  the forecast's 95 % band. */
function forecastRange(forecast) {
  return (_u, min, max) => {
    for (const p of forecast()?.points ?? []) {
      if (Number.isFinite(p.lo95)) min = min === null ? p.lo95 : Math.min(min, p.lo95);
      if (Number.isFinite(p.hi95)) max = max === null ? p.hi95 : Math.max(max, p.hi95);
    }
    return min === null || max === null ? [null, null] : uPlot.rangeNum(min, max, 0.1, true);
  };
}

export function countChart(
  target, width, syncKey, shaded, xRange = () => null, soFar = false, anomalies = () => [],
) {
  const colors = palette();
  const [xAxis, yAxis] = axes(colors, 64);
  const chart = new uPlot({
    width, height: 100, class: "count-chart",
    cursor: { sync: { key: syncKey } },
    hooks: {
      drawClear: [
        shadeRanges(anomalies, colors.anomalyBand, colors.anomalyEdge),
        shadeRanges(shaded, colors.alertBand, colors.alertEdge),
      ],
    },
    // Counts from 0 to a round number, ticked at 0, the top and its half when whole: uPlot's
    // own ticks, on a plot this low, left a single "0".
    scales: { x: timeScale(xRange), y: { range: (_u, _min, max) => [0, niceCeiling(max)] } },
    axes: [xAxis, { ...yAxis, splits: (_u, _axis, _min, max) => countTicks(max) }],
    series: [{}, {
      label: "count", stroke: colors.count, width: 1.25, fill: colors.band,
      value: (_u, v) => formatNumber(v),
    }, ...(soFar ? [{
      label: "count so far", stroke: colors.count, width: 1.25, dash: [4, 4],
      value: (_u, v) => formatNumber(v),
    }] : [])],
  }, countData(emptyColumns(), soFar), target);
  target.uplot = chart; // its scales, for the tests and a curious developer's console
  return chart;
}

/** The count axis's ticks up to `top` (a `niceCeiling`): 0, the top, and its half when that
 *  is a whole number. */
export function countTicks(top) {
  const half = top / 2;
  return top > 1 && Number.isInteger(half) ? [0, half, top] : [0, top];
}

/** The smallest of 1, 2, 5 × 10^k at or above `max` (at least 1): the count axis's top. */
export function niceCeiling(max) {
  return max > 1 ? niceTop(max) : 1;
}

/** An SVG path (`d`) through `[ts, value]` pairs in a width × height box: x by time, y from
 *  the smallest value (bottom) to the largest (top); broken where a value is null. A point
 *  with no neighbour is a zero-length segment, which a round line cap draws as a dot. "" when
 *  no value is a number. */
export function sparkPath(pairs, width, height) {
  const drawn = pairs.filter(([, v]) => typeof v === "number" && Number.isFinite(v));
  if (drawn.length === 0) return "";
  const values = drawn.map(([, v]) => v);
  const [lo, hi] = [Math.min(...values), Math.max(...values)];
  const [t0, t1] = [drawn[0][0], drawn[drawn.length - 1][0]];
  const x = (t) => (t1 === t0 ? width / 2 : ((t - t0) / (t1 - t0)) * width);
  const y = (v) => (hi === lo ? height / 2 : height - ((v - lo) / (hi - lo)) * height);
  let path = "";
  let pen = false;
  for (const [t, v] of pairs) {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      pen = false;
      continue;
    }
    path += `${pen ? "L" : "M"}${x(t).toFixed(2)} ${y(v).toFixed(2)}${pen ? "" : "l0 0"}`;
    pen = true;
  }
  return path;
}

/** The message types of `points` in `window` (their `windows[window].messages`), sorted: the
 *  lines of the window's messages chart. */
export function messageTypes(points, window) {
  const types = new Set();
  for (const point of points) {
    const counts = (point.windows[window] || {}).messages;
    if (counts !== null && typeof counts === "object") for (const type of Object.keys(counts)) types.add(type);
  }
  return [...types].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The columns of a window's messages chart: [ts, rate of each of `types`...], a type's
 *  rate per second as each update's window carries it, 0 where the window holds none of it
 *  (a window that counts messages carries no `messages` while it holds none); a null row
 *  before a point that follows a gap breaks the lines there, as in `windowColumns`. */
export function messageColumns(points, window, types) {
  const ts = [];
  const rates = types.map(() => []);
  for (const point of points) {
    if (point.gapBefore) {
      ts.push(point.ts);
      for (const column of rates) column.push(null);
    }
    const counts = (point.windows[window] || {}).messages || {};
    ts.push(point.ts);
    types.forEach((type, i) => rates[i].push(counts[type] ? counts[type].rate : 0));
  }
  return [ts, ...rates];
}

/** The message types series points count (their `messages`), sorted: the lines of a range's
 *  messages chart. */
export function seriesMessageTypes(points) {
  const types = new Set();
  for (const point of points) {
    const counts = point.messages;
    if (counts !== null && typeof counts === "object") for (const type of Object.keys(counts)) types.add(type);
  }
  return [...types].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The columns of a range's messages chart from its `seriesColumns`: [ts, rate of each of
 *  `types`...], a closed bucket's messages per second of the type as its point carries them
 *  (0 where it held none of it); null where the lines break (an idle stretch) and on the
 *  buckets not closed yet, whose counts so far are part of a bucket (a rate of part of one
 *  would dip at the right edge). */
export function seriesMessageColumns(cols, types) {
  return [cols.ts, ...types.map((type) => cols.messages.map((counts) => {
    if (counts === null) return null;
    return counts[type] ? counts[type].rate : 0;
  }))];
}

/** The smallest of 1, 2, 5 × 10^k at or above `max` (1 when nothing is above 0): the top of
 *  a rate axis, whose rates are often below 1 (a message a minute is 0.0167/s). */
export function niceTop(max) {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
  return 10 * power;
}

/** A window's messages per second by type: a line per type of `types` (in their order, each
 *  its colour of the palette's `--type-N`), from 0; below its count chart, synced with it. */
export function messageChart(target, width, syncKey, shaded, xRange, types) {
  const colors = palette();
  const css = getComputedStyle(document.documentElement);
  const typeColors = [0, 1, 2, 3, 4, 5].map((n) => css.getPropertyValue(`--type-${n}`).trim());
  const [xAxis, yAxis] = axes(colors, 64);
  const chart = new uPlot({
    width, height: 120, class: "messages-chart",
    cursor: { sync: { key: syncKey } },
    hooks: { drawClear: [shadeRanges(shaded, colors.alertBand, colors.alertEdge)] },
    scales: { x: timeScale(xRange), y: { range: (_u, _min, max) => [0, niceTop(max)] } },
    axes: [xAxis, yAxis],
    series: [{}, ...types.map((type, i) => ({
      label: `${type} /s`, stroke: typeColors[i % typeColors.length], width: 1.5,
      value: (_u, v) => formatNumber(v),
    }))],
  }, [[], ...types.map(() => [])], target);
  target.uplot = chart; // its data and series, for the tests and a curious developer's console
  return chart;
}
