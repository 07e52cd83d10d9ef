// The overview: a tile per topic shown (`TopicList`: those whose name contains the filter's
// text, by name or newest update first, a bounded number of them with "Show more"), with its
// latest value, its rate over the smallest window, and a small chart of its last hour at one
// resolution: the closed buckets of its series (their means, refreshed every half minute),
// then, dashed, the buckets not closed yet as far as they go (the finer buckets and the values
// since, gathered into them: charts.js `hourColumns`; each once the page holds all its values,
// which may come with the topic's history after the buckets). A topic with messages names its
// newest's type.
//
// A page may know 100,000 topics (a channel per user): only the tiles shown exist, and only
// those on screen (an IntersectionObserver says which) draw a chart and ask the server for
// anything — their hour of buckets here, their history and presence through `onScreen`. A
// tile below the fold shows the numbers the stream brought, and the rest once scrolled to.
// Producer text (topic names, tags, messages) reaches the page only through textContent and
// attributes.

import { hourColumns, sparkChart } from "./charts.js";
import { formatNumber, formatTime, isoTime, windowSeconds } from "./format.js";
import { shownData } from "./messages.js";
import { sessionRuleOf } from "./rules.js";
import { labelSeconds } from "./series.js";
import { PAGE, TopicList } from "./topic-list.js";

const HOUR_S = 3600;
const REFRESH_MS = 30_000; // how often a shown tile's hour of buckets is fetched again
const HOUR_POINTS = 60;
// Tiles this close below (or above) the viewport count as on screen: they load just before
// they are scrolled to.
const NEAR_SCREEN = "200px 0px";

const count = new Intl.NumberFormat("en-US");

export class Overview {
  /** `onScreen(names)`: tiles came on screen; `names` are all those on screen now. */
  constructor(store, els, onScreen = () => {}) {
    this.store = store;
    this.els = els; // section, grid, filter, order, shown, more, empty, template
    this.list = new TopicList(store);
    this.tiles = new Map(); // name -> {el, refs, version, chart, tagsKey, onScreen}
    this.hours = new Map(); // name -> {at (ms), buckets: [{t, mean, resolution}]}
    this.onScreen = onScreen;
    this.timer = null; // a render waiting for newest first to be sorted again
    this.drawnRules = null; // the rules (GET rules) the tiles were drawn with
    els.filter.addEventListener("input", () => {
      this.list.setFilter(els.filter.value.trim());
      this.render(true);
    });
    els.order.addEventListener("change", () => {
      this.list.setOrder(els.order.value);
      this.render(true);
    });
    els.more.addEventListener("click", () => {
      this.list.more();
      this.render(true);
    });
    this.resize = new ResizeObserver(() => {
      for (const tile of this.tiles.values()) if (tile.onScreen) this.fit(tile);
    });
    this.seen = new IntersectionObserver((entries) => this.intersected(entries), { rootMargin: NEAR_SCREEN });
  }

  render(all = false) {
    // The rules too: tiles drawn before GET rules answered are drawn again once it has (a
    // session topic's tile says why its time lags), with no update of their own to wait for.
    if (this.store.rules !== this.drawnRules) {
      this.drawnRules = this.store.rules;
      all = true;
    }
    const { names, matching, total, wait } = this.list.shown();
    const wanted = new Set(names);
    for (const [name, tile] of this.tiles) if (!wanted.has(name)) this.remove(name, tile);
    // In order: the tiles kept move where they go, new ones are made there.
    const { grid } = this.els;
    let at = grid.firstElementChild;
    for (const name of names) {
      const topic = this.store.topics.get(name);
      const tile = this.tiles.get(name) || this.create(topic);
      if (tile.el === at) at = at.nextElementSibling;
      else grid.insertBefore(tile.el, at);
      if (all || tile.version !== topic.version) this.draw(tile, topic);
    }
    this.els.empty.hidden = total > 0;
    this.els.shown.textContent = shownText(names.length, matching, total, this.list.text !== "");
    const left = matching - names.length;
    this.els.more.hidden = left <= 0;
    this.els.more.textContent = left > PAGE ? `Show ${PAGE} more` : `Show the other ${count.format(left)}`;
    if (wait !== null && this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (!this.els.section.hidden) this.render();
      }, wait);
    }
  }

  /** The names of the tiles on screen. */
  onScreenNames() {
    return [...this.tiles.values()].filter((t) => t.onScreen).map((t) => t.el.dataset.topic);
  }

  intersected(entries) {
    let came = false;
    for (const entry of entries) {
      const name = entry.target.dataset.topic;
      const tile = this.tiles.get(name);
      if (tile === undefined || tile.el !== entry.target) continue; // removed meanwhile
      const was = tile.onScreen;
      tile.onScreen = entry.isIntersecting;
      if (tile.onScreen && !was) {
        came = true;
        tile.version = -1;
        this.draw(tile, this.store.topics.get(name));
      }
    }
    if (came) this.onScreen(this.onScreenNames());
  }

  create(topic) {
    const el = this.els.template.content.firstElementChild.cloneNode(true);
    const refs = {
      link: el.querySelector(".topic-link"),
      value: el.querySelector(".value"),
      rate: el.querySelector(".rate"),
      chart: el.querySelector(".spark"),
      tags: el.querySelector(".tags"),
      time: el.querySelector("time"),
      staleNote: el.querySelector(".stale-note"),
      sessionLag: el.querySelector(".session-lag"),
      lastMessage: el.querySelector(".last-message"),
      lastMessageType: el.querySelector(".last-message-type"),
    };
    el.dataset.topic = topic.name;
    refs.link.textContent = topic.name;
    refs.link.href = `#/topics/${encodeURIComponent(topic.name)}`;
    const tile = { el, refs, version: -1, chart: null, tagsKey: null, onScreen: false };
    this.tiles.set(topic.name, tile);
    this.resize.observe(refs.chart);
    this.seen.observe(el);
    return tile;
  }

  /** A tile no longer shown: gone from the page, with its chart and its hour. */
  remove(name, tile) {
    this.seen.unobserve(tile.el);
    this.resize.unobserve(tile.refs.chart);
    if (tile.chart !== null) tile.chart.destroy();
    tile.el.remove();
    this.tiles.delete(name);
    this.hours.delete(name);
  }

  draw(tile, topic) {
    tile.version = topic.version;
    const { refs } = tile;
    tile.el.classList.toggle("stale", topic.stale);
    refs.staleNote.hidden = !topic.stale;
    setText(refs.value, formatNumber(topic.value, 6));
    refs.value.title = topic.value !== null ? ""
      : topic.messages.length ? "no value among the recent events: its messages carry none"
        : "no event in the recent history";
    setText(refs.rate, rateText(topic.windows));
    if (topic.ts !== null) {
      setText(refs.time, formatTime(topic.ts));
      refs.time.dateTime = isoTime(topic.ts);
    }
    // A session topic's clock is its sessions' ends: a visit counts once it ended, its gap
    // after its last event, so its time lags its source topics' by about that gap.
    const session = sessionRuleOf(this.store.rules, topic.name);
    refs.sessionLag.hidden = session === null;
    if (session !== null) {
      const why = `(sessions count when they end, ${session.gap} after their last event)`;
      setText(refs.sessionLag, why);
    }
    renderTags(tile, topic.tags);
    renderLastMessage(refs, topic.messages[topic.messages.length - 1]);
    // Off screen: its numbers only; its chart (and the hour it needs) once it is scrolled to.
    if (!tile.onScreen) return;
    const hour = this.hourOf(topic);
    const [ts, values, soFar] = hourColumns(hour.buckets, topic.points, topic.ts, labelSeconds);
    if (tile.chart === null) {
      if (!refs.chart.clientWidth) return; // hidden: drawn when shown
      const name = topic.name;
      tile.chart = sparkChart(refs.chart, refs.chart.clientWidth, () => this.hourRange(name));
    }
    tile.chart.setData([ts, values, soFar]);
    const means = values.filter((v) => v !== null);
    const partial = soFar.filter((v, i) => v !== null && values[i] === null);
    const finite = [...means, ...partial];
    const what = hour.buckets.length
      ? `last hour: ${means.length} bucket means, then ${partial.length} so far`
      : `last ${finite.length} values`;
    refs.chart.setAttribute("aria-label", finite.length === 0 ? "no values yet"
      : `${what}, from ${formatNumber(Math.min(...finite))} to ${formatNumber(Math.max(...finite))}`);
    refs.chart.dataset.points = String(finite.length);
    refs.chart.dataset.buckets = String(hour.buckets.length);
    // The buckets drawn so far: none until the page holds every event they gather.
    refs.chart.dataset.soFar = String(partial.length);
  }

  /** The topic's last hour of closed buckets as last fetched; fetches them again (and draws
   *  the tile once they arrive) when older than REFRESH_MS. */
  hourOf(topic) {
    let hour = this.hours.get(topic.name);
    if (hour === undefined) {
      hour = { at: 0, buckets: [], loading: false };
      this.hours.set(topic.name, hour);
    }
    if (!hour.loading && Date.now() - hour.at > REFRESH_MS && topic.ts !== null) {
      hour.loading = true;
      const since = topic.ts - HOUR_S;
      const url = `topics/${encodeURIComponent(topic.name)}/series?resolution=auto` +
        `&points=${HOUR_POINTS}&since=${since}`;
      fetch(url)
        .then((response) => (response.ok ? response.json() : null))
        .then((answer) => {
          hour.at = Date.now();
          if (answer !== null) hour.buckets = bucketsOf(answer);
        })
        .catch(() => { hour.at = Date.now(); })
        .finally(() => {
          hour.loading = false;
          const tile = this.tiles.get(topic.name);
          if (tile && tile.onScreen) this.draw(tile, this.store.topics.get(topic.name) || topic);
        });
    }
    return hour;
  }

  /** A tile's x-range: the hour to its topic's clock, once it has buckets; else its values'. */
  hourRange(name) {
    const topic = this.store.topics.get(name);
    const hour = this.hours.get(name);
    if (!topic || topic.ts === null || !hour || hour.buckets.length === 0) return null;
    return [topic.ts - HOUR_S, topic.ts];
  }

  fit(tile) {
    const width = tile.refs.chart.clientWidth;
    if (tile.chart && width && width !== tile.chart.width) {
      tile.chart.setSize({ width, height: 48 });
    } else if (!tile.chart && width) {
      tile.version = -1; // draw it now that it has a size
      const topic = this.store.topics.get(tile.el.dataset.topic);
      if (topic) this.draw(tile, topic);
    }
  }
}

/** "N of M topics shown", or with a filter, of those matching and how many in all. */
export function shownText(shown, matching, total, filtered) {
  if (total === 0) return "";
  const plural = (n) => (n === 1 ? "topic" : "topics");
  if (!filtered) return `${count.format(shown)} of ${count.format(total)} ${plural(total)} shown`;
  return `${count.format(shown)} of ${count.format(matching)} matching ${plural(matching)} shown, ` +
    `${count.format(total)} in all`;
}

function bucketsOf(answer) {
  const resolutionAt = (t) => {
    for (const segment of answer.segments) if (segment.since <= t && t < segment.until) return segment.resolution;
    return answer.resolution;
  };
  return answer.points.map((p) => ({
    t: p.t, mean: p.mean, count: p.count, sum: p.sum, resolution: resolutionAt(p.t),
  }));
}

/** Events per second over the smallest window: its count divided by its length. */
export function rateText(windows) {
  let best = null;
  for (const [label, stats] of Object.entries(windows || {})) {
    const seconds = windowSeconds(label);
    if (Number.isFinite(seconds) && (best === null || seconds < best.seconds)) {
      best = { label, seconds, count: stats ? stats.count : null };
    }
  }
  if (best === null || typeof best.count !== "number") return "— /s";
  return `${formatNumber(best.count / best.seconds)} /s over ${best.label}`;
}

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** A topic with messages: its newest's type, its data on hover. */
function renderLastMessage(refs, message) {
  refs.lastMessage.hidden = message === undefined;
  if (message === undefined) return;
  setText(refs.lastMessageType, message.type);
  refs.lastMessage.title = shownData(message);
}

function renderTags(tile, tags) {
  const entries = tags ? Object.entries(tags) : [];
  const key = JSON.stringify(entries);
  if (key === tile.tagsKey) return;
  tile.tagsKey = key;
  tile.refs.tags.replaceChildren(...entries.map(([name, value]) => {
    const item = document.createElement("li");
    const k = document.createElement("span");
    k.className = "tag-key";
    k.textContent = name;
    const v = document.createElement("span");
    v.className = "tag-value";
    v.textContent = String(value);
    item.append(k, ": ", v);
    item.title = `${name}: ${value}`; // the whole of it, where the pill ends in an ellipsis
    return item;
  }));
  tile.refs.tags.hidden = entries.length === 0;
}
