// Getting data: the history first (GET topics/{t}/history), then ONE EventSource for all
// topics that resumes exactly where the history ended (?lastEventId= the oldest resume_id
// of the pages loaded), so the charts continue with no gap and no repeated point. Relative
// URLs, so the page also works when a proxy mounts pushsvc under a path.

import { oldestId } from "./store.js";

const STREAM_URL = "stream?topic=*";
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const PARALLEL_FETCHES = 4;

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
      topic.snapshot(latest, false);
    } catch (_error) { /* gone meanwhile: the stream tells */ }
  }
  return page.resume_id;
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
  }

  /** History of every topic the caller may read, then the stream from where it ends. */
  async start() {
    clearTimeout(this.timer);
    this.on.status("connecting", "connecting…");
    let resumes = [];
    try {
      const listing = await getJson("topics");
      const names = listing.topics.map((t) => t.topic);
      await inParallel(names, async (name) => {
        resumes.push(await loadHistory(this.store, name, this.limitFor(name)));
        this.on.changed();
      });
    } catch (error) {
      if (error instanceof Refused) {
        this.retry(`not signed in: no access to the topics`, "unauthorized");
        return;
      }
      // Unreachable or failing: the stream alone (from its snapshot) still shows the present.
      resumes = [];
    }
    this.lastEventId = oldestId(resumes.filter(Boolean));
    this.connect();
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
