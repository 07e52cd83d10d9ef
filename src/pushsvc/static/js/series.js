// Long ranges on the topic view: closed buckets from GET /topics/{t}/series
// (resolution=auto: among the tiers keeping the whole range, the coarsest giving the chart
// enough points, the recent part from finer tiers), extended live by a stream that asks for those tiers' points (?series=).
// A point is one bucket [t, t + resolution); a coarser point, when it closes, replaces the
// finer points inside its bucket, so fetched and live points meet with no gap and none twice.

import { fetchJson, subscribe } from "../pushsvc.js";

/** The live range: the last this many seconds of the topic clock, from its updates. */
export const LIVE_S = 300;

export const RANGES = [
  ["live", `live ${LIVE_S / 60}m`], ["3600", "1 h"], ["21600", "6 h"], ["86400", "24 h"],
  ["604800", "7 d"],
];

const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };

/** "1m" -> 60 (a resolution label's seconds). */
export function labelSeconds(label) {
  const match = /^(\d+)([smhd])$/.exec(label);
  return match ? Number(match[1]) * UNITS[match[2]] : NaN;
}

/** Put `point` ({t, resolution, ...}) into `points` (ascending t): a coarser point replaces
 *  the finer ones inside its bucket; a correction (`"correction": true`: a late event amended
 *  its bucket) replaces the point held of the same t and resolution; any other point already
 *  held, or covered by a coarser one (which has its own correction), is dropped. Returns
 *  whether `points` changed. */
export function mergePoint(points, point, correction = false) {
  const width = labelSeconds(point.resolution);
  for (const [index, held] of points.entries()) {
    const heldWidth = labelSeconds(held.resolution);
    if (correction && held.t === point.t && heldWidth === width) {
      points[index] = point;
      return true;
    }
    if (heldWidth >= width && held.t <= point.t && point.t < held.t + heldWidth) return false;
  }
  let i = points.length;
  while (i > 0 && points[i - 1].t >= point.t) i--;
  let end = i;
  while (end < points.length && points[end].t < point.t + width) end++;
  points.splice(i, end - i, point);
  return true;
}

export class SeriesRange {
  /** `onChange()` runs after the points change (fetched, or a live point merged). */
  constructor(onChange) {
    this.onChange = onChange;
    this.points = [];
    this.resolution = null; // the coarsest tier asked for: the one the chart is drawn at
    this.source = null;
    this.key = null;
    this.error = null;
    this.forecast = null; // the series' latest forecast (its rule's `forecast`), if it has one
  }

  /** Show `rangeS` seconds up to `clockS` of `topic` (or of the group `group`: {tag: value}),
   *  with about `wanted` points; with `forecasts` (its rule makes one), its latest forecast. */
  async load(topic, group, rangeS, clockS, wanted, forecasts = false) {
    const key = JSON.stringify([topic, group, rangeS, forecasts]);
    if (key === this.key) return;
    this.close();
    this.key = key;
    const filter = group
      ? Object.entries(group).map(([k, v]) => `&group=${encodeURIComponent(`${k}:${v}`)}`).join("")
      : "";
    const path = `topics/${encodeURIComponent(topic)}`;
    const since = clockS - rangeS;
    const query = `${path}/series?resolution=auto&points=${wanted}${filter}`;
    try {
      const answer = await fetchJson(`${query}&since=${since}`);
      if (this.key !== key) return; // another range was chosen meanwhile
      this.points = answer.points.map((p) => ({ ...p, resolution: resolutionOf(answer.segments, p.t) }));
      const tiers = [...new Set(answer.segments.map((segment) => segment.resolution))];
      this.resolution = tiers.reduce((a, b) => (a === null || labelSeconds(b) > labelSeconds(a) ? b : a), null);
      if (forecasts) await this.loadForecast(path, filter, key);
      this.follow(topic, group, tiers, async () => {
        // Subscribed: what closed between the answer and now comes from the series again.
        const last = this.points.length ? this.points[this.points.length - 1].t : since;
        const again = await fetchJson(`${query}&since=${last}`);
        if (this.key !== key) return;
        for (const p of again.points) mergePoint(this.points, { ...p, resolution: resolutionOf(again.segments, p.t) });
        this.onChange();
      });
    } catch (error) {
      if (this.key !== key) return;
      this.error = String(error);
    }
    this.onChange();
  }

  /** Drop the points before `since` (a bucket's start, inclusive, as the series' `since`):
   *  a range ends at the topic clock, so as the clock moves on its oldest buckets leave it.
   *  Without this a page kept open counted, and listed, every bucket since it was opened. */
  trim(since) {
    let gone = 0;
    while (gone < this.points.length && this.points[gone].t < since) gone++;
    if (gone) this.points.splice(0, gone);
  }

  /** Merge every point of these tiers as it closes; `subscribed` runs once the stream's
   *  snapshot says the server is sending them. */
  follow(topic, group, tiers, subscribed) {
    if (!tiers.length) return;
    let first = true;
    this.source = subscribe({
      topics: topic, stats: ["count"], series: tiers, group: group || undefined,
      onSnapshot: () => {
        if (first) subscribed();
        first = false;
      },
      onPoint: (message) => {
        if (!group && message.group) return; // a group's point, on the topic's view
        if (this.forecast && message.resolution === this.forecast.resolution) {
          // Its tier closed a bucket: the aggregator has made the next forecast with it.
          this.loadForecast(...this.forecastFrom, this.key).then(() => this.onChange());
        }
        const point = { ...message.point, resolution: message.resolution };
        if (mergePoint(this.points, point, Boolean(message.correction))) this.onChange();
      },
    });
  }

  /** The latest forecast (`GET /topics/{t}/forecast`), null where the rule makes none. */
  async loadForecast(path, filter, key) {
    this.forecastFrom = [path, filter];
    try {
      const answer = await fetchJson(`${path}/forecast${filter ? `?${filter.slice(1)}` : ""}`);
      if (this.key === key) this.forecast = answer;
    } catch {
      if (this.key === key) this.forecast = null; // 404: no forecast (yet)
    }
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
    this.forecast = null;
    this.key = null;
    this.points = [];
    this.resolution = null;
    this.error = null;
  }
}

function resolutionOf(segments, t) {
  for (const segment of segments) if (segment.since <= t && t < segment.until) return segment.resolution;
  return segments.length ? segments[segments.length - 1].resolution : "";
}
