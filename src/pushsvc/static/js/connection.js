// Getting data: ONE EventSource for all topics, opened first, so the page is live at once
// however many topics there are; then each topic's history (GET topics/{t}/history), a few
// at a time, the topic on screen first. A history page is asked for only once the stream is
// open (its snapshot arrived), so it reaches at least as far as the stream's start: points
// are merged by update id (store.js), and history and live data meet with no gap and no
// repeated point. Relative URLs, so the page also works when a proxy mounts pushsvc under a
// path. The analytics rules (GET rules: which topics group, their windows and statistics)
// are asked for on every connection, so a restart with other rules shows.

import { groupId, groupPart } from "./store.js";

const STREAM_URL = "stream?topic=*";
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const PARALLEL_FETCHES = 4;
// The overview draws the recent past of this many topics (in the order it lists them); the
// others start from what arrives live. A topic view always loads its own.
const OVERVIEW_HISTORIES = 100;

export class Refused extends Error {
  constructor(status) { super(`HTTP ${status}`); this.status = status; }
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
  if (response.status === 401 || response.status === 403) throw new Refused(response.status);
  if (!response.ok) throw new Error(`HTTP ${response.status} for ${url}`);
  return response.json();
}

export function historyUrl(name, limit) {
  return `topics/${encodeURIComponent(name)}/history?limit=${limit}`;
}

/** Load a topic's newest `limit` updates into the store; the page's resume_id. */
export async function loadHistory(store, name, limit) {
  const page = await getJson(historyUrl(name, limit));
  const topic = store.topic(name);
  topic.merge(page.updates);
  topic.loaded = Math.max(topic.loaded, limit);
  if (page.updates.length === 0 && topic.points.length === 0) {
    // Nothing kept for it (trimmed): its current numbers at least.
    try {
      const latest = await getJson(`topics/${encodeURIComponent(name)}/stats`);
      topic.snapshot(latest, false, false);
    } catch (_error) { /* gone meanwhile: the stream tells */ }
  }
  return page.resume_id;
}

// As many `?group=` as the server takes on one request.
const MAX_GROUP_FILTERS = 16;

/** The `?group=tag:value` filters that pick out a group's updates on the server: one per
 *  tag with a value. A tag the group's events lack (null in its key) has no value to filter
 *  by; nor can a tag with a colon in its name be written as a filter. The page picks the
 *  group's part out of each update itself (`groupPart`) in any case, so those filters only
 *  narrow what is sent. */
export function groupQuery(key) {
  return Object.entries(key)
    .filter(([tag, value]) => value !== null && !tag.includes(":"))
    .slice(0, MAX_GROUP_FILTERS)
    .map(([tag, value]) => `&group=${encodeURIComponent(`${tag}:${value}`)}`)
    .join("");
}

/** Load a group's part of its topic's newest `limit` updates into `series`. The history's
 *  limit counts the topic's updates before the filter, so a group filtered on the server or
 *  here gets the same points. */
export async function loadGroupHistory(series, name, key, limit) {
  const page = await getJson(historyUrl(name, limit) + groupQuery(key));
  const id = groupId(key);
  series.merge(page.updates.map((update) => groupPart(update, id)).filter((u) => u !== null));
  series.loaded = Math.max(series.loaded, limit);
}

async function inParallel(items, work) {
  const queue = [...items];
  const worker = async () => { while (queue.length) await work(queue.shift()); };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_FETCHES, queue.length) }, worker));
}

/**
 * `handlers`: status(state, text), update(update), snapshot(snapshot), changed().
 * States: connecting, live, reconnecting, gap (updates were lost: the history could not
 * continue from our last id), unauthorized.
 */
export class Connection {
  constructor(store, handlers, limitFor) {
    this.store = store;
    this.on = handlers;
    this.limitFor = limitFor;
    this.source = null;
    this.lastEventId = "";
    this.delay = RECONNECT_MIN_MS;
    this.timer = 0;
    this.histories = null; // topics whose history is still to load once the stream opens
    this.opened = false; // a snapshot arrived: history pages asked for now meet the stream
    this.loading = new Set(); // topics whose history is being asked for
  }

  /** The stream, then the histories of the topics the caller may read. */
  async start() {
    clearTimeout(this.timer);
    this.on.status("connecting", "connecting…");
    let names = [];
    try {
      // EventSource cannot tell a 401 from a network error: ask first.
      const listing = await getJson("topics");
      names = listing.topics.map((t) => t.topic).sort();
    } catch (error) {
      if (error instanceof Refused) {
        this.retry(`not signed in: no access to the topics`, "unauthorized");
        return;
      }
      // Unreachable or failing: the stream alone (from its snapshot) still shows the present.
    }
    this.histories = names;
    this.connect();
  }

  /** The analytics rules, into the store; kept as they were when they cannot be read. */
  async loadRules() {
    try {
      this.store.rules = await getJson("rules");
      this.on.changed();
    } catch (_error) { /* views fall back on what the updates carry */ }
  }

  /** The histories of `names` not loaded yet, the topic on screen first, at most
   *  OVERVIEW_HISTORIES of them: after the stream's first snapshot, and for the topics a
   *  filter shows. Only once the stream is open, so that they meet it. */
  async loadHistories(names) {
    if (!this.opened) return;
    const due = (name) => !this.loading.has(name)
      && this.store.topic(name).loaded < this.limitFor(name);
    // A stable sort: the topic view's topic (the larger limit) first, then in listed order.
    const wanted = names.filter(due).sort((a, b) => this.limitFor(b) - this.limitFor(a))
      .slice(0, OVERVIEW_HISTORIES);
    for (const name of wanted) this.loading.add(name);
    await inParallel(wanted, async (name) => {
      try {
        await loadHistory(this.store, name, this.limitFor(name));
      } catch (_error) { /* refused or gone meanwhile: the stream goes on */ }
      this.loading.delete(name);
      this.on.changed();
    });
  }

  connect() {
    clearTimeout(this.timer);
    // A fresh EventSource cannot send Last-Event-ID; the server takes it as a parameter.
    // Its own reconnections send the header, which the server prefers.
    const url = this.lastEventId
      ? `${STREAM_URL}&lastEventId=${encodeURIComponent(this.lastEventId)}` : STREAM_URL;
    const source = this.source = new EventSource(url);
    source.addEventListener("open", () => {
      this.delay = RECONNECT_MIN_MS;
      this.on.status("live", "live");
      this.loadRules();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error status, or a non-SSE answer from a proxy): retry
        // ourselves, backing off, from the last id seen.
        this.retry("", "reconnecting");
      } else {
        // EventSource reconnects by itself and resumes with Last-Event-ID.
        this.on.status("reconnecting", "reconnecting…");
      }
    });
    source.addEventListener("snapshot", (message) => {
      this.remember(message);
      const snapshot = JSON.parse(message.data);
      this.opened = true;
      if (this.histories !== null) {
        // The stream is open: a history page asked for now reaches as far as it starts.
        const names = this.histories;
        this.histories = null;
        this.loadHistories(names);
      }
      if (snapshot.gap) {
        this.on.status("gap", `live, after a gap at ${new Date().toISOString().slice(11, 19)} ` +
          "UTC: updates were missed");
      }
      this.on.snapshot(snapshot);
    });
    source.addEventListener("stats", (message) => {
      this.remember(message);
      this.on.update(JSON.parse(message.data));
    });
  }

  remember(message) {
    if (message.lastEventId) this.lastEventId = message.lastEventId;
  }

  retry(reason, state) {
    if (this.source) this.source.close();
    const seconds = Math.round(this.delay / 1000);
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, RECONNECT_MAX_MS);
    if (state === "unauthorized") {
      // The application signs its users in and sets the pushsvc_token cookie (see
      // docs/security.md); the page keeps retrying, so it goes live once that is done.
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.start(), this.delay);
      this.on.status(state, `${reason} (retrying in ${seconds} s)`);
      return;
    }
    this.on.status("reconnecting", `reconnecting in ${seconds} s…`);
    this.explain(seconds);
  }

  async explain(seconds) {
    // EventSource does not tell the status: ask whether it is a missing or expired token.
    try {
      const response = await fetch("topics", { cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        this.on.status("unauthorized",
          `not signed in: no access to the topics (retrying in ${seconds} s)`);
      }
    } catch (_error) { /* unreachable: "reconnecting" already says it */ }
  }
}
