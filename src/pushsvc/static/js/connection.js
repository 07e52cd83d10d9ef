// Getting data: ONE subscription to every topic (`*`, through pushsvc.js: one EventSource,
// reconnection from the last id, the connection's state), opened first, so the page is live
// at once however many topics there are; then the histories (GET topics/{t}/history) of the
// topics on screen only — the topic view's, or the overview's tiles in view — a few at a
// time, the topic view's first, as the views ask for them. A history page is
// asked for only once the stream is open (its snapshot arrived), so it reaches at least as far
// as the stream's start: points are merged by update id (store.js), and history and live data
// meet with no gap and no repeated point. The analytics rules (GET rules: which topics group,
// their windows and statistics) are asked for on every connection, so a restart with other
// rules shows.

import { fetchHistory, fetchJson, groupId, groupPart, subscribe } from "../pushsvc.js";
import { formatTime } from "./format.js";

const PARALLEL_FETCHES = 4;
// The most histories asked for at once (the overview's tiles on screen are fewer). A topic
// view always loads its own.
const OVERVIEW_HISTORIES = 100;

/** Load a topic's newest `limit` updates into the store. */
export async function loadHistory(store, name, limit) {
  const page = await fetchHistory(name, { limit });
  const topic = store.topic(name);
  topic.merge(page.updates);
  topic.loaded = Math.max(topic.loaded, limit);
  if (page.updates.length === 0 && topic.points.length === 0) {
    // Nothing kept for it (trimmed): its current numbers at least.
    try {
      const latest = await fetchJson(`topics/${encodeURIComponent(name)}/stats`);
      topic.snapshot(latest, false, false);
    } catch (_error) { /* gone meanwhile: the stream tells */ }
  }
}

// As many `?group=` as the server takes on one request.
const MAX_GROUP_FILTERS = 16;

/** The `?group=tag:value` filters that pick out a group's updates on the server: one per tag
 *  with a value. A tag the group's events lack (null in its key) has no value to filter by;
 *  nor can a tag with a colon in its name be written as a filter. The page picks the group's
 *  part out of each update itself (`groupPart`) in any case, so these filters only narrow
 *  what is sent. */
export function serverFilter(key) {
  return Object.fromEntries(Object.entries(key)
    .filter(([tag, value]) => value !== null && !tag.includes(":"))
    .slice(0, MAX_GROUP_FILTERS));
}

/** Load a group's part of its topic's newest `limit` updates into `series`. The history's
 *  limit counts the topic's updates before the filter, so a group filtered on the server or
 *  here gets the same points. */
export async function loadGroupHistory(series, name, key, limit) {
  const page = await fetchHistory(name, { limit, group: serverFilter(key) });
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
 * `handlers`: status(state, text), update(update), snapshot(snapshot), changed(),
 * firstHistories() (the names whose histories to load once the stream is open).
 * States: connecting, live, reconnecting, gap (updates were lost: the stream could not
 * continue from our last id), unauthorized.
 */
export class Connection {
  constructor(store, handlers, limitFor) {
    this.store = store;
    this.on = handlers;
    this.limitFor = limitFor;
    this.opened = false; // a snapshot arrived: history pages asked for now meet the stream
    this.loading = new Set(); // topics whose history is being asked for
  }

  /** The stream; once it is open, the histories of the topics on screen
   *  (`handlers.firstHistories()`). */
  start() {
    subscribe({
      topics: ["*"],
      onStatus: (state, detail) => this.status(state, detail),
      onUpdate: (update) => this.on.update(update),
      onGap: () => this.on.status("gap", `live, after a gap at ${formatTime(this.store.now())}: ` +
        "updates were missed"),
      onSnapshot: (snapshot) => {
        const first = !this.opened;
        this.opened = true;
        this.on.snapshot(snapshot);
        // Those the server has: a topic view opened before its topic's first event has none.
        const known = snapshot.topics || {};
        if (first) this.loadHistories(this.on.firstHistories().filter((n) => Object.hasOwn(known, n)));
      },
    });
  }

  status(state, { retryInMs }) {
    const seconds = Math.round(retryInMs / 1000);
    if (state === "live") {
      this.on.status("live", "live");
      this.loadRules();
    } else if (state === "unauthorized") {
      // The application signs its users in and sets the pushsvc_token cookie (see
      // docs/security.md); the subscription keeps retrying, so it goes live once that is done.
      this.on.status(state, `not signed in: no access to the topics (retrying in ${seconds} s)`);
    } else if (state === "reconnecting") {
      const when = retryInMs === undefined ? "" : ` in ${seconds} s`;
      this.on.status(state, `reconnecting${when}…`);
    }
  }

  /** The analytics rules, into the store; kept as they were when they cannot be read. */
  async loadRules() {
    try {
      this.store.rules = await fetchJson("rules");
      this.on.changed();
    } catch (_error) { /* views fall back on what the updates carry */ }
  }

  /** The histories of `names` not loaded yet, the topic view's first, at most
   *  OVERVIEW_HISTORIES of them: after the stream's first snapshot, and for the tiles that
   *  come on screen. Only once the stream is open, so that they meet it. */
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
}
