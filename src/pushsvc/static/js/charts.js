// Charts drawn with uPlot (vendored under dashboard/vendor/, a global `uPlot`): a small
// line per topic in the overview; per window, mean/p50/p90/p99 over time with the min–max
// band shaded, and the count below. x is the update's `ts` (the topic clock, seconds). A
// window's charts also shade the x-ranges their `shaded()` gives (where an alert fired),
// behind the grid and the lines.
// A group's sparkline in the groups table is a plain SVG path (`sparkPath`): a table may
// have hundreds of rows, and a canvas chart per row would cost far more than a path.

import { formatNumber } from "./format.js";

export const LINES = ["mean", "p50", "p90", "p99"];

function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return {
    text: v("--muted"), grid: v("--line"), accent: v("--accent"), band: v("--band"),
    alertBand: v("--alert-band"),
    mean: v("--accent"), p50: v("--ok"), p90: v("--warn"), p99: v("--danger"), count: v("--muted"),
  };
}

function axes(colors, valueWidth) {
  const grid = { stroke: colors.grid, width: 1 };
  return [
    { stroke: colors.text, grid, ticks: grid },
    {
      stroke: colors.text, grid, ticks: grid, size: valueWidth,
      values: (_u, ticks) => ticks.map((t) => formatNumber(t)),
    },
  ];
}

/** The columns uPlot draws for one window: [ts, min, max, mean, p50, p90, p99] and
 *  [ts, count]; a null row before a point that follows a gap breaks the lines there. */
export function windowColumns(points, window) {
  const cols = { ts: [], min: [], max: [], count: [], ids: [] };
  for (const line of LINES) cols[line] = [];
  const push = (ts, stats, id) => {
    cols.ts.push(ts);
    cols.ids.push(id);
    for (const key of ["min", "max", "count", ...LINES]) cols[key].push(stats ? stats[key] ?? null : null);
  };
  for (const point of points) {
    if (point.gapBefore) push(point.ts, null, null);
    push(point.ts, point.windows[window] || {}, point.id.text);
  }
  return cols;
}

/** The same columns for series points ({t, resolution, count, mean, ...}): one row per
 *  closed bucket, at its start; where two buckets or more in a row had no event, a null row
 *  breaks the lines (an idle stretch), as a gap does for updates. */
export function seriesColumns(points, widthOf) {
  const cols = { ts: [], min: [], max: [], count: [], ids: [] };
  for (const line of LINES) cols[line] = [];
  let end = null;
  let lastStart = null;
  for (const point of points) {
    if (end !== null && point.t > end + (end - lastStart)) {
      cols.ts.push(end);
      cols.ids.push(null);
      for (const key of ["min", "max", "count", ...LINES]) cols[key].push(null);
    }
    cols.ts.push(point.t);
    cols.ids.push(`${point.resolution}@${point.t}`);
    for (const key of ["min", "max", "count", ...LINES]) cols[key].push(point[key] ?? null);
    lastStart = point.t;
    end = point.t + widthOf(point.resolution);
  }
  return cols;
}

/** A tile's last hour: each closed bucket's mean at its start, then the values of the
 *  updates since the newest bucket's end (the recent part no bucket holds yet), within an
 *  hour of `clock`. */
export function hourColumns(buckets, points, clock, widthOf) {
  const ts = [];
  const values = [];
  const from = clock === null ? -Infinity : clock - 3600;
  let end = -Infinity;
  for (const bucket of buckets) {
    if (bucket.t < from) continue;
    ts.push(bucket.t);
    values.push(bucket.mean);
    end = bucket.t + widthOf(bucket.resolution);
  }
  const [recentTs, recentValues] = sparkColumns(points.filter((p) => p.ts >= Math.max(end, from)));
  return [ts.concat(recentTs), values.concat(recentValues)];
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

export function sparkChart(target, width) {
  const colors = palette();
  return new uPlot({
    width, height: 48, class: "spark-chart",
    legend: { show: false }, cursor: { show: false }, select: { show: false },
    scales: { x: { time: true } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: colors.accent, width: 1.5, points: { show: false } }],
  }, [[], []], target);
}

/** A hook filling each range `ranges()` gives ({from, to}: x values; `to` null for "to the
 *  right edge") over the plot area. On drawClear, so the grid and the series come over it. */
function shadeRanges(ranges, fill) {
  return (u) => {
    const { left, top, width, height } = u.bbox;
    const right = left + width;
    u.ctx.save();
    u.ctx.fillStyle = fill;
    for (const { from, to } of ranges()) {
      const x0 = Math.max(left, u.valToPos(from, "x", true));
      const x1 = to === null ? right : Math.min(right, u.valToPos(to, "x", true));
      // At least a device pixel wide: a range that began and ended at one time still shows.
      if (x1 >= x0) u.ctx.fillRect(x0, top, Math.max(x1 - x0, 1), height);
    }
    u.ctx.restore();
  };
}

export function windowChart(target, width, syncKey, shaded) {
  const colors = palette();
  const chart = new uPlot({
    width, height: 220, class: "window-chart",
    cursor: { sync: { key: syncKey } },
    hooks: { drawClear: [shadeRanges(shaded, colors.alertBand)] },
    scales: { x: { time: true } },
    axes: axes(colors, 64),
    series: [
      {},
      { label: "min", stroke: colors.band, width: 1, value: (_u, v) => formatNumber(v) },
      { label: "max", stroke: colors.band, width: 1, value: (_u, v) => formatNumber(v) },
      ...LINES.map((line) => ({
        label: line, stroke: colors[line], width: line === "mean" ? 2 : 1.25,
        value: (_u, v) => formatNumber(v),
      })),
    ],
    bands: [{ series: [2, 1], fill: colors.band }],
  }, [[], [], [], [], [], [], []], target);
  target.uplot = chart; // its scales, for the tests and a curious developer's console
  return chart;
}

export function countChart(target, width, syncKey, shaded) {
  const colors = palette();
  const [xAxis, yAxis] = axes(colors, 64);
  const chart = new uPlot({
    width, height: 90, class: "count-chart",
    cursor: { sync: { key: syncKey } },
    hooks: { drawClear: [shadeRanges(shaded, colors.alertBand)] },
    // Counts from 0, in whole steps: uPlot's own range around a flat count left one tick.
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, niceCeiling(max)] } },
    axes: [xAxis, { ...yAxis, incrs: WHOLE_STEPS, space: 24 }],
    series: [{}, {
      label: "count", stroke: colors.count, width: 1.25, fill: colors.band,
      value: (_u, v) => formatNumber(v),
    }],
  }, [[], []], target);
  target.uplot = chart; // its scales, for the tests and a curious developer's console
  return chart;
}

const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7];

/** The smallest of 1, 2, 5 × 10^k at or above `max` (at least 1): the count axis's top. */
export function niceCeiling(max) {
  if (!(max > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
  return 10 * power;
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
