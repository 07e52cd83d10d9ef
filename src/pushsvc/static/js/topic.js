// The topic view (#/topics/NAME): per window, a chart of mean, p50, p90 and p99 over time
// with the min–max band shaded and the count below, each with its data as a table (the
// charts' text alternative); the current numbers beside; live, with pause/resume and a
// window selector. The same for one group of a grouping topic (#/topics/NAME?group=...):
// the group's series (its part of the topic's updates), with a way back to the whole topic.
// Every chart shades where an alert instance fired, listed above the charts: on a group's
// view that group's instances; on the topic's, its own and all its groups' (an alert of a
// group is one about the topic's events too, and the list names the group). A topic whose
// events carry messages shows its latest messages above the charts and its counts per type
// beside them (messages.js), and under each window's count chart the window's messages per
// second by type, a line per type; a range's, its closed buckets' messages per second by type
// (series points count them).

import { isAfter } from "../pushsvc.js";
import { topicHash } from "./address.js";
import { renderPeriods, shadedRanges } from "./alert-periods.js";
import {
  chartLayout, countChart, countData, layoutCaption, messageChart, messageColumns, messageTypes,
  seriesColumns, seriesMessageColumns, seriesMessageTypes, windowChart, windowColumns, windowData,
} from "./charts.js";
import { formatNumber, formatTime, isoTime } from "./format.js";
import { groupLabel } from "./groups.js";
import { MessagePanel } from "./messages.js";
import { rateText, setText } from "./overview.js";
import { isDerived, ruleFor } from "./rules.js";
import { LIVE_S, RANGES, SeriesRange, labelSeconds } from "./series.js";
import { SessionPanel } from "./sessions.js";
import { TagPanel } from "./tags.js";

const STATS = ["count", "mean", "min", "max", "stddev", "p50", "p90", "p99"];
const RANGE_FIGURE = "range"; // the figure of a range drawn from the series
const TABLE_COLUMNS = ["mean", "p50", "p90", "p99", "min", "max", "count"];

export class TopicView {
  constructor(els, alertLog, onResume = () => {}, rules = () => null) {
    // section, title, groupLine, groupName, wholeTopic, windowSelect, pause, figures, current,
    // value, time, rate, template, alertPeriods, alertPeriodsList, tags, sessions,
    // latestMessages, messageCounts
    this.els = els;
    this.messages = new MessagePanel(els.latestMessages, els.messageCounts);
    this.tags = new TagPanel(els.tags);
    this.sessions = new SessionPanel(els.sessions);
    this.rules = rules; // GET rules as the page has read it (null before)
    this.alertLog = alertLog;
    this.bands = []; // the x-ranges every chart shades: where an alert instance fired
    this.topic = null; // what the charts draw: the topic's series, or one group's
    this.figures = new Map(); // window -> figure state
    this.paused = false;
    this.pausedAfter = null; // the newest point drawn when paused
    this.drawn = -1;
    this.drawnRules = null; // the rules it was drawn with
    els.pause.addEventListener("click", () => {
      this.paused = !this.paused;
      els.pause.setAttribute("aria-pressed", String(this.paused));
      els.pause.textContent = this.paused ? "Resume" : "Pause";
      const last = this.topic && this.topic.points[this.topic.points.length - 1];
      this.pausedAfter = this.paused && last ? last.id : null;
      if (!this.paused) {
        this.render(true);
        onResume();
      }
    });
    els.windowSelect.addEventListener("change", () => this.render(true));
    // Ranges longer than the live history are drawn from the topic's series.
    this.range = "live";
    this.name = null;
    this.whole = null;
    this.rangeAwaitsClock = false; // a range was chosen before the topic clock was known
    this.groupKey = null;
    this.series = new SeriesRange(() => this.render(true));
    els.rangeSelect.replaceChildren(...RANGES.map(([value, label]) => new Option(label, value)));
    els.rangeSelect.addEventListener("change", () => {
      this.range = els.rangeSelect.value;
      this.loadRange();
      this.render(true);
    });
    this.resize = new ResizeObserver(() => {
      for (const figure of this.figures.values()) fit(figure);
    });
  }

  /** The topic's charts, or with `group` ({key, series}) that group's. */
  show(topic, group = null) {
    const series = group === null ? topic : group.series;
    if (this.topic !== series) {
      this.topic = series;
      this.name = topic.name;
      this.whole = topic; // its clock ends a range, a group's too
      this.groupKey = group === null ? null : group.key;
      this.loadRange();
      for (const figure of this.figures.values()) {
        figure.main.destroy();
        figure.count.destroy();
        if (figure.messages !== null) figure.messages.destroy();
      }
      this.figures.clear();
      this.els.figures.replaceChildren();
      this.drawn = -1;
      setText(this.els.title, topic.name);
      this.els.groupLine.hidden = group === null;
      this.els.wholeTopic.parentElement.hidden = group === null;
      this.els.wholeTopic.href = topicHash(topic.name);
      if (group !== null) setText(this.els.groupName, groupLabel(group.key));
      this.showAlerts();
    }
    this.render(true);
  }

  /** Mark where the instances of what is shown fired: the list, and the charts' bands. */
  showAlerts() {
    if (this.topic === null) return;
    const periods = this.alertLog.periods(this.name, this.groupKey);
    this.bands = shadedRanges(periods);
    renderPeriods(this.els.alertPeriods, this.els.alertPeriodsList, periods);
    for (const figure of this.figures.values()) {
      figure.main.redraw(false);
      figure.count.redraw(false);
      if (figure.messages !== null) figure.messages.redraw(false);
    }
  }

  hide() {
    this.topic = null;
    this.series.close();
  }

  /** Fetch the chosen range's points (nothing to fetch for the live range). A range ends at
   *  the topic clock: until the page knows it (the stream's snapshot may come after the page
   *  went live), the range waits, and `render` loads it once an update has set it. The
   *  browser's clock is no stand-in: a topic whose events are hours behind it would be asked
   *  for a range after its clock (a 400, and an empty chart). */
  loadRange() {
    this.rangeAwaitsClock = false;
    if (this.range === "live" || this.topic === null) {
      this.series.close();
      return;
    }
    const clock = this.whole.ts;
    if (clock === null) {
      this.series.close();
      this.rangeAwaitsClock = true;
      return;
    }
    const wanted = Math.max(60, Math.round((this.els.figures.clientWidth || 900) / 3));
    // Its forecast too, where its rule makes one (known once GET rules has answered).
    const forecasts = Boolean(ruleFor(this.rules(), this.name)?.forecast);
    this.series.load(this.name, this.groupKey, Number(this.range), clock, wanted, forecasts);
  }

  render(force = false) {
    const topic = this.topic;
    if (this.rangeAwaitsClock && this.whole?.ts != null) this.loadRange();
    if (topic !== null && this.paused && !force) this.countWhilePaused(topic);
    // The rules too: a topic drawn before GET rules answered is drawn again once it has (a
    // derived topic's tag panel goes), with no update of its own to wait for.
    const rules = this.rules();
    if (rules !== this.drawnRules && this.range !== "live" && this.whole?.ts != null) {
      this.loadRange(); // the range's forecast, once the rules say there is one
    }
    const same = this.drawn === topic?.version && this.drawnRules === rules;
    if (topic === null || (!force && (this.paused || same))) return;
    this.drawn = topic.version;
    this.drawnRules = rules;
    const windows = Object.keys(topic.windows);
    this.syncSelect(windows);
    const chosen = this.els.windowSelect.value;
    const ranged = this.range !== "live";
    this.els.windowSelect.disabled = ranged;
    for (const window of windows) {
      let figure = this.figures.get(window);
      if (figure === undefined) figure = this.create(window);
      figure.el.hidden = ranged || (chosen !== "" && chosen !== window);
      if (!figure.el.hidden) this.draw(figure, topic);
    }
    let span = this.figures.get(RANGE_FIGURE);
    // Once the rule's statistics are known (from the windows): the range draws only those.
    if (ranged && span === undefined && windows.length) span = this.create(RANGE_FIGURE);
    if (span !== undefined) {
      span.el.hidden = !ranged;
      if (ranged) this.drawRange(span);
    }
    this.renderCurrent(topic, windows);
    // A derived topic's events carry no tags: no panel of counts that stay at nothing.
    this.tags.render(topic, chosen, isDerived(rules, this.name));
    this.sessions.render(topic, chosen);
    this.messages.render(topic, chosen);
  }

  /** Paused charts hold still; the button says how many updates they will catch up on. */
  countWhilePaused(topic) {
    let fresh = 0;
    for (let i = topic.points.length - 1; i >= 0; i--) {
      if (this.pausedAfter !== null && !isAfter(topic.points[i].id, this.pausedAfter)) break;
      fresh++;
    }
    this.els.pause.textContent = fresh ? `Resume (${fresh} new)` : "Resume";
  }

  syncSelect(windows) {
    const select = this.els.windowSelect;
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join() === windows.join()) return;
    const chosen = select.value;
    select.replaceChildren(new Option("all windows", ""), ...windows.map((w) => new Option(w, w)));
    select.value = windows.includes(chosen) ? chosen : "";
  }

  create(window) {
    const el = this.els.template.content.firstElementChild.cloneNode(true);
    el.dataset.window = window;
    el.querySelector(".window-name").textContent = window;
    const ranged = window === RANGE_FIGURE; // series buckets: some may be so far
    // A window draws the statistics its rule keeps; a range too, every one of its windows
    // keeps (a series point has every statistic, docs/series.md: drawn, one the rule does not
    // keep would look as if it did).
    const windows = ranged ? Object.keys(this.topic.windows) : [window];
    const kept = [...new Set(windows.flatMap((w) => Object.keys(this.topic.windows[w] || {})))];
    const layout = chartLayout(kept !== null && kept.length ? kept : null);
    const figure = {
      el, window, layout,
      tableColumns: TABLE_COLUMNS.filter(
        (key) => [...layout.lines, ...layout.extremes].includes(key) || (layout.count && key === "count"),
      ),
      name: el.querySelector(".window-name"),
      points: el.querySelector(".points"),
      mainEl: el.querySelector(".chart-main"),
      countEl: el.querySelector(".chart-count"),
      messagesEl: el.querySelector(".chart-messages"),
      note: el.querySelector(".legend-note"),
      details: el.querySelector("details"),
      head: el.querySelector("table.data thead tr"),
      tbody: el.querySelector("tbody"),
      columns: null,
      caption: layoutCaption(layout),
      messages: null, // the chart of messages per second by type, once the window has some
      types: [], // the types it draws, a line each
      rates: null, // its columns: [ts, rate of each type...]
      makeMessages: null,
    };
    const caption = figure.caption;
    figure.note.textContent = caption;
    figure.mainEl.setAttribute("aria-label", `${window} window over time: ${caption}`);
    figure.mainEl.hidden = !layout.lines.length && !layout.extremes.length;
    figure.countEl.setAttribute("aria-label", `${window} window: count over time`);
    figure.countEl.hidden = !layout.count;
    tableHead(figure);
    this.els.figures.append(el);
    const width = figure.mainEl.clientWidth || 300;
    const key = `pushsvc-${window}`;
    const shaded = () => this.bands;
    const span = () => this.xRange(window);
    const anomalies = ranged ? () => this.anomalyRanges() : () => [];
    const forecast = ranged ? () => this.series.forecast : () => null;
    figure.main = windowChart(
      figure.mainEl, width, key, shaded, span, ranged, layout, anomalies, forecast,
    );
    figure.count = countChart(figure.countEl, width, key, shaded, span, ranged, anomalies);
    figure.makeMessages = (types) => messageChart(
      figure.messagesEl, figure.mainEl.clientWidth || width, key, shaded, span, types,
    );
    figure.details.addEventListener("toggle", () => renderTable(figure));
    this.figures.set(window, figure);
    this.resize.observe(figure.mainEl);
    return figure;
  }

  /** The buckets of the range's series that their rule's detector flagged anomalous (the
   *  `anomaly` tier's points, docs/series.md), as x-ranges the range charts shade. */
  anomalyRanges() {
    return this.series.points
      .filter((p) => p.anomalous === true)
      .map((p) => ({ from: p.t, to: p.t + labelSeconds(p.resolution) }));
  }

  /** What a figure's charts span: the last LIVE_S seconds of the topic clock for a window's
   *  (live), the chosen range's for the range's; both end at the clock (the whole topic's, on
   *  a group's view too). Null before the topic has one. */
  xRange(window) {
    const clock = this.whole === null ? null : this.whole.ts ?? this.topic?.ts ?? null;
    if (clock === null) return null;
    const span = window === RANGE_FIGURE ? Number(this.range) : LIVE_S;
    if (!Number.isFinite(span)) return null;
    // The range's charts reach as far as the series' forecast, drawn ahead of the line.
    const ahead = window === RANGE_FIGURE ? this.series.forecast?.points.at(-1)?.t : undefined;
    return [clock - span, ahead === undefined ? clock : Math.max(clock, ahead / 1000)];
  }

  draw(figure, topic) {
    const [from] = this.xRange(figure.window) ?? [-Infinity];
    const cols = windowColumns(topic.points.filter((p) => p.ts >= from), figure.window);
    figure.columns = cols;
    figure.main.setData(windowData(cols, false, figure.layout));
    figure.count.setData(countData(cols));
    this.drawMessages(figure, topic, topic.points.filter((p) => p.ts >= from));
    const n = cols.ids.filter(Boolean).length;
    setText(figure.points, `${n} update${n === 1 ? "" : "s"}`);
    figure.el.dataset.points = String(n);
    renderTable(figure);
  }

  /** A window's messages per second by type, a line per type its drawn updates count (none
   *  while they count none, or the window counts no messages). A type that comes or goes
   *  makes a new chart: uPlot's series are fixed when a chart is made. */
  drawMessages(figure, topic, points) {
    const types = topic.messageWindows.has(figure.window) ? messageTypes(points, figure.window) : [];
    showTypes(figure, types, `${figure.window} window`);
    figure.rates = types.length ? messageColumns(points, figure.window, types) : null;
    if (figure.messages !== null) figure.messages.setData(figure.rates);
  }

  /** The chosen range from the series: one bucket per point, at its start, at the coarsest
   *  resolution asked for; what it has not closed yet, so far (`seriesColumns`). Only the
   *  buckets inside the range as the clock now ends it: those it left are dropped. */
  drawRange(figure) {
    const span = this.xRange(RANGE_FIGURE);
    if (span !== null) this.series.trim(span[0]);
    const { points, error, resolution } = this.series;
    const cols = seriesColumns(points, labelSeconds, resolution ? labelSeconds(resolution) : null);
    figure.columns = cols;
    figure.main.setData(windowData(cols, true, figure.layout));
    figure.count.setData(countData(cols, true));
    const label = RANGES.find(([value]) => value === this.range)[1];
    // Its buckets' messages per second by type, a line per type its points count.
    const types = seriesMessageTypes(points);
    showTypes(figure, types, `last ${label}, by bucket`);
    figure.rates = types.length ? seriesMessageColumns(cols, types) : null;
    if (figure.messages !== null) figure.messages.setData(figure.rates);
    figure.el.dataset.messageTypes = types.join(",");
    const closed = cols.ids.filter((id, i) => id !== null && !cols.soFar[i]).length;
    const soFar = cols.soFar.filter(Boolean).length;
    setText(figure.name, `last ${label}`);
    setText(figure.points, error ?? `${closed} bucket${closed === 1 ? "" : "s"}` +
      (resolution ? ` of ${resolution}` : "") + (soFar ? `, ${soFar} more so far` : ""));
    figure.el.dataset.points = String(closed);
    figure.el.dataset.soFar = String(soFar);
    figure.el.dataset.anomalies = String(points.filter((p) => p.anomalous === true).length);
    figure.el.dataset.forecast = String(this.series.forecast?.points.length ?? 0);
    renderTable(figure);
  }

  renderCurrent(topic, windows) {
    const { current } = this.els;
    // The statistics the topic's rule keeps (a rule may keep a few); all before any arrive.
    const kept = STATS.filter((stat) => windows.some((w) => Object.hasOwn(topic.windows[w] || {}, stat)));
    const rows = kept.length ? kept : STATS;
    const layout = JSON.stringify([windows, rows]);
    if (current.dataset.layout !== layout) {
      current.dataset.layout = layout;
      const head = current.tHead.rows[0];
      head.replaceChildren(th("col", "statistic"), ...windows.map((w) => th("col", w)));
      current.tBodies[0].replaceChildren(...rows.map((stat) => {
        const row = document.createElement("tr");
        row.append(th("row", stat), ...windows.map((w) => {
          const cell = document.createElement("td");
          cell.dataset.window = w;
          cell.dataset.stat = stat;
          return cell;
        }));
        return row;
      }));
    }
    for (const cell of current.querySelectorAll("td")) {
      const stats = topic.windows[cell.dataset.window] || {};
      setText(cell, formatNumber(stats[cell.dataset.stat]));
    }
    setText(this.els.value, formatNumber(topic.value, 6));
    setText(this.els.rate, rateText(topic.windows));
    if (topic.ts !== null) {
      setText(this.els.time, formatTime(topic.ts));
      this.els.time.dateTime = isoTime(topic.ts);
    }
    this.els.section.classList.toggle("stale", topic.stale);
  }
}

/** Make `figure`'s messages chart draw a line per type of `types` (`label`: what the chart
 *  is of, for its description), if it does not: a type that comes or goes makes a new chart
 *  (uPlot's series are fixed when a chart is made), and its Data table's columns follow. */
function showTypes(figure, types, label) {
  if (types.join("\n") === figure.types.join("\n")) return;
  if (figure.messages !== null) figure.messages.destroy();
  figure.messages = null;
  figure.types = types;
  figure.messagesEl.hidden = !types.length;
  if (types.length) figure.messages = figure.makeMessages(types);
  figure.messagesEl.setAttribute(
    "aria-label", `${label}: messages per second of ${types.join(", ")} over time`,
  );
  setText(figure.note, figure.caption + (types.length ? "; messages per s by type below" : ""));
  tableHead(figure);
}

function th(scope, text) {
  const cell = document.createElement("th");
  cell.scope = scope;
  cell.textContent = text;
  return cell;
}

function fit(figure) {
  const width = figure.mainEl.clientWidth;
  if (width && width !== figure.main.width) {
    figure.main.setSize({ width, height: 220 });
    figure.count.setSize({ width, height: 100 });
  }
  if (width && figure.messages !== null && width !== figure.messages.width) {
    figure.messages.setSize({ width, height: 120 });
  }
}

/** A figure's Data table head: time, its statistics, and each message type's rate. */
function tableHead(figure) {
  figure.head.replaceChildren(
    th("col", "time"), ...figure.tableColumns.map((key) => th("col", key)),
    ...figure.types.map((type) => th("col", `${type} /s`)),
  );
}

/** The drawn columns as rows, newest first; only while the table is open. A bucket not
 *  closed yet says so, with what is known of it so far (its mean and count); where the
 *  lines break because updates were missed, a row says that. */
function renderTable(figure) {
  if (!figure.details.open || figure.columns === null) return;
  const cols = figure.columns;
  const rows = [];
  for (let i = cols.ts.length - 1; i >= 0; i--) {
    if (cols.ids[i] === null) {
      if (cols.gap[i]) rows.push(gapRow(figure.tableColumns.length + figure.types.length + 1));
      continue;
    }
    const soFar = cols.soFar[i];
    const row = document.createElement("tr");
    row.dataset.id = cols.ids[i];
    if (soFar) row.classList.add("so-far");
    const time = document.createElement("th");
    time.scope = "row";
    time.textContent = formatTime(cols.ts[i]) + (soFar ? " (so far)" : "");
    const value = (key) => {
      if (!soFar) return cols[key][i];
      return key === "mean" ? cols.meanSoFar[i] : key === "count" ? cols.countSoFar[i] : null;
    };
    row.append(time, ...figure.tableColumns.map((key) => {
      const cell = document.createElement("td");
      cell.dataset.stat = key;
      cell.textContent = formatNumber(value(key));
      return cell;
    }), ...figure.types.map((type, t) => {
      // The rates' rows are the statistics' rows (gaps included): the same points.
      const cell = document.createElement("td");
      cell.dataset.type = type;
      cell.textContent = formatNumber(figure.rates[t + 1][i]);
      return cell;
    }));
    rows.push(row);
  }
  figure.tbody.replaceChildren(...rows);
}

/** The table's row where the lines break: updates were missed there (a gap). */
function gapRow(span) {
  const row = document.createElement("tr");
  row.classList.add("gap");
  const cell = th("row", "— updates missed —");
  cell.colSpan = span;
  row.append(cell);
  return row;
}
