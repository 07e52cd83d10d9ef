// pushsvc dashboard: one EventSource on every topic, one card per topic.
//
// Topic names and tags come from producers: they only ever reach the page through
// textContent and attribute setters, never through innerHTML (the server's
// Content-Security-Policy backs this up).
"use strict";

(() => {
  // Relative URLs, so the page also works when a proxy mounts pushsvc under a path.
  // Without ?windows=/?stats= every viewer shares the frame the server encoded once per update;
  // max_hz keeps a busy topic from costing the browser more than a few renders a second.
  const STREAM_URL = "stream?topic=*&max_hz=4";
  const SPARK_POINTS = 100;
  const STATS = ["count", "mean", "min", "max", "stddev", "p50", "p90", "p99"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;
  const LATEST_FETCHES = 4;

  const els = {
    status: document.getElementById("status"),
    statusText: document.getElementById("status-text"),
    filter: document.getElementById("filter"),
    shown: document.getElementById("shown"),
    resynced: document.getElementById("resynced"),
    empty: document.getElementById("empty"),
    cards: document.getElementById("cards"),
    template: document.getElementById("card-template"),
  };

  /** topic name -> state; `dom` is filled when the card is first rendered. */
  const topics = new Map();
  const dirty = new Set();
  let renderQueued = false;
  let filterPrefix = "";
  let source = null;
  let lastEventId = "";
  let reconnectDelay = RECONNECT_MIN_MS;
  let reconnectTimer = 0;

  // ---- numbers and times -------------------------------------------------------------

  const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const significant = {
    4: new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 }),
    6: new Intl.NumberFormat(undefined, { maximumSignificantDigits: 6 }),
  };
  const clock = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });

  /** `digits` significant digits (4 in tables, where columns must stay narrow; 6 for the
   *  latest value), null as a dash. */
  function formatNumber(x, digits = 4) {
    if (typeof x !== "number" || !Number.isFinite(x)) return "—";
    const a = Math.abs(x);
    // Past these magnitudes plain digits stop being readable: use scientific notation.
    if (a >= 1e9 || (a !== 0 && a < 1e-3)) return x.toExponential(digits - 1);
    // Never round away digits left of the decimal point.
    return a >= 10 ** digits ? whole.format(x) : significant[digits].format(x);
  }

  function formatTime(epochSeconds) {
    const date = new Date(epochSeconds * 1000);
    return Number.isNaN(date.getTime()) ? "—" : clock.format(date);
  }

  // ---- state ---------------------------------------------------------------------------

  function topicState(name) {
    let state = topics.get(name);
    if (state === undefined) {
      state = {
        name, windows: {}, ts: null, value: null, tags: null,
        spark: [], stale: false, liveSeq: 0, dom: null,
      };
      topics.set(name, state);
    }
    return state;
  }

  function pushSpark(state, value) {
    state.spark.push(value);
    if (state.spark.length > SPARK_POINTS) state.spark.splice(0, state.spark.length - SPARK_POINTS);
  }

  function onStats(message) {
    remember(message);
    const update = JSON.parse(message.data);
    const state = topicState(update.topic);
    state.windows = update.windows || {};
    state.ts = update.ts;
    state.stale = false;
    state.liveSeq += 1;
    if (update.event) { // tick updates (windows sliding on an idle topic) carry no event
      state.value = update.event.value;
      state.tags = update.event.tags || null;
      pushSpark(state, update.event.value);
    }
    markDirty(state.name);
  }

  function onSnapshot(message) {
    remember(message);
    const snapshot = JSON.parse(message.data);
    const current = snapshot.topics || {};
    if (snapshot.gap) showResynced();
    for (const [name, entry] of Object.entries(current)) {
      const state = topicState(name);
      state.windows = entry.windows || {};
      state.ts = entry.ts;
      state.stale = false;
      // Values between the last one we drew and now were missed: break the line there.
      if (snapshot.gap && state.spark.length && state.spark[state.spark.length - 1] !== null) {
        pushSpark(state, null);
      }
      markDirty(name);
    }
    // A snapshot is the server's whole state for `*`: anything else is gone (e.g. a restart).
    for (const state of topics.values()) {
      // hasOwn, not `in`: a topic may well be called "constructor".
      if (!Object.hasOwn(current, state.name) && !state.stale) {
        state.stale = true;
        markDirty(state.name);
      }
    }
    // The snapshot has statistics but not the latest event: ask for it, a few at a time.
    fetchLatest(Object.keys(current).sort());
  }

  function remember(message) {
    // Paced updates may come without an id; EventSource then keeps the previous one.
    if (message.lastEventId) lastEventId = message.lastEventId;
  }

  function fetchLatest(names) {
    const queue = names.map((name) => [name, topicState(name).liveSeq]);
    const worker = async () => {
      while (queue.length) {
        const [name, seq] = queue.shift();
        try {
          const response = await fetch(`topics/${encodeURIComponent(name)}/stats`,
            { cache: "no-store", headers: { Accept: "application/json" } });
          if (!response.ok) continue;
          const update = await response.json();
          const state = topicState(name);
          // A live update since the snapshot is newer than anything this answer holds.
          if (state.liveSeq !== seq || !update.event) continue;
          state.value = update.event.value;
          state.tags = update.event.tags || null;
          markDirty(name);
        } catch (_error) {
          // Offline or restarting: the next live update brings the value anyway.
        }
      }
    };
    for (let i = 0; i < Math.min(LATEST_FETCHES, queue.length); i++) worker();
  }

  // ---- connection ------------------------------------------------------------------------

  function setStatus(state, text) {
    els.status.dataset.state = state;
    els.statusText.textContent = text;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    // A fresh EventSource cannot send Last-Event-ID; the server takes it as a parameter.
    const url = lastEventId
      ? `${STREAM_URL}&lastEventId=${encodeURIComponent(lastEventId)}` : STREAM_URL;
    source = new EventSource(url);
    source.addEventListener("open", () => {
      reconnectDelay = RECONNECT_MIN_MS;
      setStatus("connected", "connected");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error status or a non-SSE answer, e.g. from a proxy):
        // retry ourselves, backing off, resuming from the last id we saw.
        const seconds = Math.round(reconnectDelay / 1000);
        setStatus("reconnecting", `reconnecting in ${seconds} s…`);
        reconnectTimer = setTimeout(connect, reconnectDelay);
        reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
      } else {
        // EventSource reconnects by itself and resumes with Last-Event-ID.
        setStatus("reconnecting", "reconnecting…");
      }
    });
    source.addEventListener("snapshot", onSnapshot);
    source.addEventListener("stats", onStats);
  }

  function showResynced() {
    const note = els.resynced;
    note.textContent = `Resynced at ${formatTime(Date.now() / 1000)}: updates were missed while ` +
      "disconnected; the cards show the server's current state, sparklines have a break.";
    note.hidden = false;
  }

  // ---- rendering -----------------------------------------------------------------------

  function markDirty(name) {
    dirty.add(name);
    if (!renderQueued) {
      renderQueued = true;
      // Coalesces bursts into one render per frame, and none while the tab is hidden.
      requestAnimationFrame(render);
    }
  }

  function render() {
    renderQueued = false;
    for (const name of dirty) renderCard(topics.get(name));
    dirty.clear();
    renderSummary();
  }

  function renderSummary() {
    let shown = 0;
    for (const state of topics.values()) if (state.dom && !state.dom.card.hidden) shown++;
    els.empty.hidden = topics.size > 0;
    els.shown.textContent = topics.size === 0 ? ""
      : `${shown} of ${topics.size} topic${topics.size === 1 ? "" : "s"} shown`;
  }

  function createCard(state) {
    const card = els.template.content.firstElementChild.cloneNode(true);
    const dom = {
      card,
      topic: card.querySelector(".topic"),
      staleNote: card.querySelector(".stale-note"),
      value: card.querySelector(".value"),
      spark: card.querySelector(".spark"),
      sparkLine: card.querySelector(".spark-line"),
      tags: card.querySelector(".tags"),
      caption: card.querySelector("caption"),
      tableWrap: card.querySelector(".table-wrap"),
      tbody: card.querySelector("tbody"),
      time: card.querySelector("time"),
      rows: new Map(),
      tagsKey: null,
    };
    card.dataset.topic = state.name;
    dom.topic.textContent = state.name;
    dom.caption.textContent = `Statistics of ${state.name} per window`;
    // It scrolls sideways in a narrow window: keyboard users must be able to reach it.
    dom.tableWrap.setAttribute("aria-label", `Statistics of ${state.name}`);
    card.hidden = !state.name.startsWith(filterPrefix);
    state.dom = dom;
    // Cards stay in topic-name order.
    let next = null;
    for (const other of els.cards.children) {
      if (other.dataset.topic > state.name) { next = other; break; }
    }
    els.cards.insertBefore(card, next);
    return dom;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function renderCard(state) {
    const dom = state.dom || createCard(state);
    dom.card.classList.toggle("stale", state.stale);
    dom.staleNote.hidden = !state.stale;
    setText(dom.value, formatNumber(state.value, 6));
    renderTags(dom, state.tags);
    renderTable(dom, state.windows);
    renderSpark(dom, state.spark);
    if (state.ts !== null) {
      setText(dom.time, formatTime(state.ts));
      dom.time.dateTime = new Date(state.ts * 1000).toISOString();
      dom.time.title = "topic clock: the time of its latest event";
    }
  }

  function renderTags(dom, tags) {
    const entries = tags ? Object.entries(tags) : [];
    const key = JSON.stringify(entries);
    if (key === dom.tagsKey) return;
    dom.tagsKey = key;
    dom.tags.replaceChildren(...entries.map(([name, value]) => {
      const item = document.createElement("li");
      const k = document.createElement("span");
      k.className = "tag-key";
      k.textContent = name;
      const v = document.createElement("span");
      v.className = "tag-value";
      v.textContent = String(value);
      item.append(k, ": ", v);
      return item;
    }));
    dom.tags.hidden = entries.length === 0;
  }

  function renderTable(dom, windows) {
    const names = Object.keys(windows);
    if (names.join("\n") !== [...dom.rows.keys()].join("\n")) {
      dom.rows.clear();
      dom.tbody.replaceChildren(...names.map((window) => {
        const row = document.createElement("tr");
        row.dataset.window = window;
        const head = document.createElement("th");
        head.scope = "row";
        head.textContent = window;
        row.append(head);
        const cells = {};
        for (const stat of STATS) {
          const cell = document.createElement("td");
          cell.dataset.stat = stat;
          cells[stat] = cell;
          row.append(cell);
        }
        dom.rows.set(window, cells);
        return row;
      }));
    }
    for (const [window, cells] of dom.rows) {
      const stats = windows[window] || {};
      for (const stat of STATS) setText(cells[stat], formatNumber(stats[stat]));
    }
  }

  function renderSpark(dom, values) {
    const finite = values.filter((v) => v !== null);
    if (finite.length === 0) {
      dom.sparkLine.setAttribute("d", "");
      dom.spark.setAttribute("aria-label", "no values yet");
      return;
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of finite) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const span = hi - lo;
    const step = 100 / Math.max(SPARK_POINTS - 1, 1);
    const x0 = 100 - step * (values.length - 1); // the newest point sits at the right edge
    const parts = [];
    let pen = "M";
    values.forEach((v, i) => {
      if (v === null) { pen = "M"; return; }
      // 2..28 of the 30-unit height, so the stroke is not clipped; flat data sits mid-height.
      const y = span > 0 ? 28 - ((v - lo) / span) * 26 : 15;
      parts.push(`${pen}${(x0 + i * step).toFixed(2)} ${y.toFixed(2)}`);
      pen = "L";
    });
    // A lone point after a break would draw nothing: give it a visible tick.
    dom.sparkLine.setAttribute("d", parts.join(" ").replace(/M([\d.-]+) ([\d.-]+)$/, "M$1 $2 h0.01"));
    dom.spark.setAttribute("aria-label",
      `last ${finite.length} values, from ${formatNumber(lo)} to ${formatNumber(hi)}`);
  }

  function applyFilter() {
    filterPrefix = els.filter.value.trim();
    for (const state of topics.values()) {
      if (state.dom) state.dom.card.hidden = !state.name.startsWith(filterPrefix);
    }
    renderSummary();
  }

  els.filter.addEventListener("input", applyFilter);
  connect();
})();
