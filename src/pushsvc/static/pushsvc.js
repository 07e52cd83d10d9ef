// pushsvc's browser client, served by pushsvc itself at /static/pushsvc.js (as centrifuge-js is
// Centrifugo's): an ES module with no dependencies, to import from any page.
//
//   import { messages, subscribe } from "https://push.example.com/static/pushsvc.js";
//   const subscription = subscribe({ topics: ["orders"], history: { limit: 100 },
//     onUpdate: (update) => console.log(update.windows["1m"].mean) });
//   const feed = messages({ topics: ["orders"], on: { shipped: (data) => console.log(data) } });
//
// What it promises (docs/browser.md): one EventSource for all the topics; with `history`, each
// update exactly once and in id order per topic, the history meeting the live stream with no
// gap and no duplicate; reconnection from the last id; a lost stretch always signalled
// (`onGap`), never silent. Auth is the `pushsvc_token` cookie the application sets.

const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const PARALLEL_HISTORIES = 4;
// The server's root: this module is served one level below it (/static/ or /dashboard/), so a
// page that imports it from pushsvc, under any path prefix a proxy adds, needs no address.
const SERVER_ROOT = new URL("../", import.meta.url).href;

/**
 * One entry of a `top_<tag>` list: a value and how many events of the window carry it. With
 * `error`, the list comes from a Space-Saving summary and the count is at most `error` above
 * the true one; without, it is exact.
 * @typedef {Object} TopValue
 * @property {string} value
 * @property {number} count
 * @property {number} [error]
 */

/**
 * One step of a session topic's `funnel`: the sessions that reached it, as a share of the
 * first step's (`conversion`) and of the step before's (`step_conversion`, null for the
 * first), and the median seconds from the first step to it (null: none reached it).
 * @typedef {Object} FunnelStep
 * @property {string} step
 * @property {number} sessions
 * @property {number|null} conversion
 * @property {number|null} step_conversion
 * @property {number|null} median_s
 */

/**
 * A session topic's own statistics in one window (`[[session]]` rules).
 * @typedef {Object} SessionStats
 * @property {number|null} bounce_rate Sessions of one event / sessions.
 * @property {number|null} events_per_session
 * @property {number|null} active Sessions open when the topic's newest session ended.
 * @property {FunnelStep[]} funnel Empty without a funnel.
 */

/**
 * Statistics of one window, by name (`count`, `sum`, `mean`, `min`, `max`, `var`, `stddev`,
 * `p50`, `p90`, `p99`, `rate`): null for an empty window or an undefined statistic; a rule's
 * `distinct_<tag>` (a number) and `top_<tag>` (a `TopValue[]`, most frequent first); for
 * a rule that scores anomalies, a time window's `anomaly_rate` (anomalous / scored among the
 * series buckets that closed in the window, in [0, 1]; null while none closed in it); and a
 * session topic's `bounce_rate`, `events_per_session`, `active` and `funnel` (`FunnelStep[]`);
 * `messages`: an exact window's counts by type (`Object<string, MessageCount>`), only while it
 * holds a message (absent: none). The statistics of values cover the events with a value.
 * @typedef {Object<string, (number|null|TopValue[]|FunnelStep[]|Object<string, MessageCount>)>} WindowStats
 */

/**
 * Statistics by window label (`10s`, `1m`, `last100`, …).
 * @typedef {Object<string, WindowStats>} Windows
 */

/**
 * A group's identity: its `group_by` tags and their values (null: the events lack the tag).
 * @typedef {Object<string, (string|null)>} GroupKey
 */

/**
 * One group's part of an update or a snapshot: its key and its own windows.
 * @typedef {Object} GroupWindows
 * @property {GroupKey} key
 * @property {Windows} windows
 */

/**
 * The producer's event an update was computed from, as it was accepted. An event has a value,
 * a message (`type` and `data`), or both.
 * @typedef {Object} PublishedEvent
 * @property {number} [value]
 * @property {number} ts Event time, epoch seconds.
 * @property {Object<string, string>} tags
 * @property {string} [type] A message's type (`message` when published without one).
 * @property {any} [data] A message's data, as published.
 */

/**
 * How many messages of one type a window holds, and their rate (per second of the window).
 * @typedef {Object} MessageCount
 * @property {number} count
 * @property {number} rate
 */

/**
 * One update (`event: stats`): the statistics of a topic right after one event, or after an
 * idle tick moved its clock.
 * @typedef {Object} Update
 * @property {string} id `epoch:ms-seq`, increasing in the order updates are emitted.
 * @property {string} topic
 * @property {number} ts The topic clock after it, epoch seconds.
 * @property {"event"|"tick"} reason
 * @property {PublishedEvent|null} event Null for a tick.
 * @property {Windows} windows
 * @property {GroupWindows} [group] The event's group, on a topic whose rule groups by tags.
 * @property {GroupWindows[]} [groups] The groups a tick changed.
 * @property {GroupKey[]} [forgotten] Groups forgotten at this update (idle for the topic TTL).
 * @property {boolean} [late] True when the event was behind the topic's clock (applied in place).
 * @property {boolean} [past_grace] A message past its topic's grace: pushed as published, in none
 *   of the topic's statistics (they are as before it; it is counted on `<topic>.late`).
 * @property {boolean} [copy] On a late stream, the copy of a message its own topic pushed: no
 *   messages stream pushes it again.
 */

/**
 * A topic's latest statistics, in a snapshot.
 * @typedef {Object} SnapshotEntry
 * @property {string} id The id of the update these statistics are from.
 * @property {number} ts
 * @property {Windows} windows
 * @property {GroupWindows[]} [groups] A grouping topic's live groups.
 */

/**
 * What a stream sends first: the current statistics of every subscribed topic that has data.
 * `gap` is true when the stream could not resume from the last id (the server lost or trimmed
 * its history): updates were missed, and these are the numbers to go on from.
 * @typedef {Object} Snapshot
 * @property {boolean} gap
 * @property {Object<string, SnapshotEntry>} topics
 * @property {string[]} [deleted] Topics deleted: everything of them before is gone.
 */

/**
 * One closed bucket `[t, t + resolution)` of a topic's (or group's) series. A rule's tags add
 * `distinct_<tag>` (a number) and `top_<tag>` (a `TopValue[]`, most frequent first), as in
 * windows. On the tier a rule's `anomaly` scores, `anomaly` and `anomalous` (absent on other
 * tiers).
 * @typedef {Object} Bucket
 * @property {number} t Bucket start, epoch seconds.
 * @property {number} count
 * @property {number} sum
 * @property {number} mean
 * @property {number} min
 * @property {number} max
 * @property {number|null} var
 * @property {number|null} stddev
 * @property {number} p50
 * @property {number} p90
 * @property {number} p99
 * @property {number} [anomaly] The bucket's anomaly score in [0, 1], from the series' past only.
 * @property {boolean} [anomalous] Whether `anomaly` reached the rule's threshold.
 * @property {Object<string, MessageCount>} [messages] The topic's messages in the bucket, by
 *   type (only where it held one): their count and their rate per second of the bucket.
 */

/**
 * A series point (`event: point`), sent as its bucket closes to subscriptions with `series`.
 * @typedef {Object} Point
 * @property {string} id In the same sequence as updates.
 * @property {string} topic
 * @property {string} resolution The tier, e.g. `1m`.
 * @property {GroupKey} [group] The group whose bucket it is.
 * @property {Bucket} point
 * @property {boolean} [correction] True when a late event amended a point sent before: this
 *   one replaces the point of the same resolution, group and `t`.
 */

/**
 * A change of an alert instance (`event: alert`), on the reserved topic `_alerts`: the
 * instance (`alert`, `topic`, `group`) became `state` at `since` (its topic's clock), `value`
 * being the statistic that caused it. A token reads the changes of the topics it may read.
 * @typedef {Object} AlertChange
 * @property {string} id In the same sequence as updates.
 * @property {string} alert
 * @property {string} topic
 * @property {GroupKey|null} group
 * @property {"pending"|"firing"|"resolved"|"inactive"} state `inactive`: a pending instance
 *   whose condition stopped holding before it fired (it was never notified).
 * @property {number|null} value
 * @property {number} since Epoch seconds.
 * @property {Object<string, string>} labels
 * @property {Object<string, string>} annotations
 */

/**
 * Updates were lost: `snapshot` is the stream's `"gap": true` snapshot when it could not
 * resume; `topic` the topic whose history could not continue from `history.since`.
 * @typedef {Object} Gap
 * @property {Snapshot|null} snapshot
 * @property {string|null} topic
 */

/**
 * `connecting` until the stream first opens; `live` while it is open; `reconnecting` while
 * the browser or the subscription reconnects; `unauthorized` when the server refuses the
 * stream with 401 or 403 (no `pushsvc_token` cookie, an expired one, or a token without these
 * topics; it keeps retrying, so it goes live once the application signs the user in);
 * `closed` after `close()`.
 * @typedef {"connecting"|"live"|"reconnecting"|"unauthorized"|"closed"} State
 */

/**
 * @typedef {Object} StatusDetail
 * @property {number} [retryInMs] When the subscription retries by itself: in how long.
 */

/**
 * Which history to hand over before the live updates, per topic: with `since` (an update id,
 * exclusive, or a time — a Date, epoch seconds or an RFC 3339 string — inclusive, on the
 * updates' `ts`), every update from there, read `limit` at a time; without it, the newest
 * `limit`. `limit`: 1 to 10000, default 1000 (the server's).
 * @typedef {Object} HistoryOptions
 * @property {string|number|Date} [since]
 * @property {number} [limit]
 */

/**
 * @typedef {Object} SubscribeOptions
 * @property {string|string[]} topics Topic names, or prefix patterns like `sensors.*` (`*`:
 *   every topic the token may read).
 * @property {(update: Update) => void} [onUpdate]
 * @property {(point: Point) => void} [onPoint]
 * @property {(change: AlertChange) => void} [onAlert] The changes of alert instances, when
 *   `topics` has `_alerts`.
 * @property {(snapshot: Snapshot) => void} [onSnapshot] Each snapshot the stream sends: when it
 *   opens, and when it reconnects with a gap.
 * @property {(gap: Gap) => void} [onGap]
 * @property {(state: State, detail: StatusDetail) => void} [onStatus] On every change of
 *   `state`.
 * @property {HistoryOptions} [history] Updates from before the subscription, once the stream
 *   is open, each topic's merged with its live updates.
 * @property {string|string[]} [series] Tiers whose points to send (`onPoint`), e.g. `["1m"]`.
 * @property {string|string[]} [windows] Only these windows, e.g. `["1m", "5m"]`.
 * @property {string|string[]} [stats] Only these statistics, e.g. `["mean", "p99"]`.
 * @property {Object<string, string>} [group] Only the updates of this group, e.g.
 *   `{station: "grill"}` (every tag must match; a tag name cannot hold a colon).
 * @property {string} [baseUrl] pushsvc's root URL (relative to the page, or absolute). Default:
 *   the server this module was loaded from. A cross-origin one is sent the cookie
 *   (`withCredentials`) when its CORS allowlist names this page's origin.
 */

/**
 * One page of a topic's history (`GET topics/{t}/history`), oldest first.
 * @typedef {Object} HistoryPage
 * @property {string} topic
 * @property {Update[]} updates
 * @property {boolean} more Further updates matched beyond `limit`.
 * @property {boolean} gap `since` was an id the history could not continue from.
 * @property {string|null} resume_id The Last-Event-ID a stream continues this page from.
 * @property {string[]} windows
 * @property {string[]} stats
 */

/**
 * @typedef {Object} HistoryQuery
 * @property {string|number|Date} [since]
 * @property {number} [limit]
 * @property {Object<string, string>} [group]
 * @property {string} [baseUrl]
 * @property {AbortSignal} [signal]
 */

/**
 * An update id, parsed: ids of one epoch compare by `(ms, seq)`.
 * @typedef {Object} ParsedId
 * @property {string} text
 * @property {string} epoch Changes when the server's history is reset.
 * @property {bigint} ms
 * @property {bigint} seq
 */

/**
 * The update as one of its groups saw it: that group's windows, and the event when it is the
 * group's (a tick has none).
 * @typedef {Object} GroupUpdate
 * @property {GroupKey} key
 * @property {string} id The group's identity (`groupId`).
 * @property {{id: string, ts: number, windows: Windows, event: PublishedEvent|null}} update
 */

// ------------------------------------------------------------------------ ids and groups

/**
 * `epoch:ms-seq` parsed; null when `text` is not an update id.
 * @param {string|null|undefined} text
 * @returns {ParsedId|null}
 */
export function parseId(text) {
  const match = /^([0-9a-f]{1,16}):(\d{1,20})-(\d{1,20})$/.exec(text || "");
  return match ? { text: match[0], epoch: match[1], ms: BigInt(match[2]), seq: BigInt(match[3]) } : null;
}

/**
 * Whether `a` comes after `b`. As on the server, an id of another epoch (a history reset after
 * `b` was issued) counts as newer.
 * @param {ParsedId} a
 * @param {ParsedId} b
 * @returns {boolean}
 */
export function isAfter(a, b) {
  if (a.epoch !== b.epoch) return true;
  return a.ms > b.ms || (a.ms === b.ms && a.seq > b.seq);
}

/**
 * A group's identity: its key's tags and values in tag order, as one string.
 * @param {GroupKey} key
 * @returns {string}
 */
export function groupId(key) {
  return JSON.stringify(Object.entries(key).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * The update as each group it carries saw it: an event's group, or the groups a tick changed.
 * @param {Update} update
 * @returns {GroupUpdate[]}
 */
export function groupUpdates(update) {
  const parts = update.group ? [update.group] : update.groups || [];
  // The event is the group's only in an event update.
  const event = update.group ? update.event : null;
  return parts.map((part) => ({
    key: part.key,
    id: groupId(part.key),
    update: { id: update.id, ts: update.ts, windows: part.windows, event },
  }));
}

/**
 * The update as the group `id` (`groupId`) saw it, or null when it does not carry that group.
 * @param {Update} update
 * @param {string} id
 * @returns {GroupUpdate["update"]|null}
 */
export function groupPart(update, id) {
  const part = groupUpdates(update).find((g) => g.id === id);
  return part === undefined ? null : part.update;
}

/**
 * How many different values of `tag` the window holds; null where the topic does not count
 * them.
 * @param {Windows} windows @param {string} window @param {string} tag
 * @returns {number|null}
 */
export function distinctOf(windows, window, tag) {
  const value = (windows[window] || {})[`distinct_${tag}`];
  return typeof value === "number" ? value : null;
}

/**
 * The share of anomalous buckets among the scored series buckets that closed in the window,
 * in [0, 1]; null where the topic scores none, or none closed in the window.
 * @param {Windows} windows @param {string} window
 * @returns {number|null}
 */
export function anomalyRateOf(windows, window) {
  const value = (windows[window] || {}).anomaly_rate;
  return typeof value === "number" ? value : null;
}

/**
 * The window's most frequent values of `tag`, most frequent first (then by value); empty
 * where the topic keeps none.
 * @param {Windows} windows @param {string} window @param {string} tag
 * @returns {TopValue[]}
 */
export function topOf(windows, window, tag) {
  const value = (windows[window] || {})[`top_${tag}`];
  return Array.isArray(value) ? value : [];
}

/**
 * A session topic's bounce rate, events per session, active sessions and funnel in the
 * window; null for any other topic.
 * @param {Windows} windows @param {string} window
 * @returns {SessionStats|null}
 */
export function sessionsOf(windows, window) {
  const stats = windows[window] || {};
  if (!("bounce_rate" in stats)) return null;
  return {
    bounce_rate: stats.bounce_rate,
    events_per_session: stats.events_per_session ?? null,
    active: stats.active ?? null,
    funnel: Array.isArray(stats.funnel) ? stats.funnel : [],
  };
}

/**
 * The window's messages counted by type (`{shipped: {count, rate}}`), in type order; empty
 * where it has none (the window carries no `messages` member while it holds no message, and a
 * window that does not count them never does).
 * @param {Windows} windows @param {string} window
 * @returns {[string, MessageCount][]}
 */
export function messageCountsOf(windows, window) {
  const counts = (windows[window] || {}).messages;
  if (counts === null || typeof counts !== "object" || Array.isArray(counts)) return [];
  return Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

// ------------------------------------------------------------------------ requests

/** A pushsvc answer with an error status (401: no valid token; 403: not in its scope). */
export class HttpError extends Error {
  /** @param {number} status @param {string} url */
  constructor(status, url) {
    super(`HTTP ${status} for ${url}`);
    this.name = "HttpError";
    /** @type {number} */
    this.status = status;
  }
}

/**
 * GET a pushsvc resource as JSON, with the cookie.
 * @param {string} path Relative to `baseUrl`, e.g. `topics/orders/stats`.
 * @param {{baseUrl?: string, signal?: AbortSignal}} [options]
 * @returns {Promise<any>} Rejects with HttpError for an error status.
 */
export async function fetchJson(path, { baseUrl = SERVER_ROOT, signal } = {}) {
  const url = resolve(baseUrl, path);
  const response = await fetch(url, {
    cache: "no-store",
    credentials: crossOrigin(url) ? "include" : "same-origin",
    headers: { Accept: "application/json" },
    signal,
  });
  if (!response.ok) throw new HttpError(response.status, url);
  return response.json();
}

/**
 * One page of a topic's history: with `since`, the first `limit` updates from there; without,
 * the newest `limit`.
 * @param {string} topic
 * @param {HistoryQuery} [query]
 * @returns {Promise<HistoryPage>}
 */
export function fetchHistory(topic, { since, limit, group, baseUrl, signal } = {}) {
  const params = new URLSearchParams();
  if (since !== undefined) params.append("since", sinceParam(since));
  if (limit !== undefined) params.append("limit", String(limit));
  for (const filter of groupFilters(group)) params.append("group", filter);
  const query = String(params);
  return fetchJson(`topics/${encodeURIComponent(topic)}/history${query && `?${query}`}`,
    { baseUrl, signal });
}

/** @param {string|number|Date} since */
function sinceParam(since) {
  return since instanceof Date ? since.toISOString() : String(since);
}

/** @param {Object<string, string>|undefined} group */
function groupFilters(group) {
  return Object.entries(group || {}).map(([tag, value]) => `${tag}:${value}`);
}

/** `path` under the root `base` (a base without its trailing slash has it added).
 *  @param {string} base @param {string} path */
function resolve(base, path) {
  const root = new URL(base, globalThis.location?.href);
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  return new URL(path, root).href;
}

/** @param {string} url */
function crossOrigin(url) {
  return new URL(url).origin !== globalThis.location?.origin;
}

/** @param {string|string[]|undefined} value */
function list(value) {
  if (value === undefined) return [];
  return typeof value === "string" ? [value] : [...value];
}

// ------------------------------------------------------------------------ the event stream

/**
 * @typedef {Object} StreamHooks
 * @property {(source: EventSource) => void} listen Adds the listeners of the stream's own
 *   events to each EventSource it opens.
 * @property {(state: State, detail: StatusDetail) => void} [onStatus]
 * @property {string} [lastEventId] Where the first connection resumes from.
 */

/**
 * One EventSource that reconnects until `close()`, what `subscribe` and `messages` share: the
 * browser's own reconnection (it sends `Last-Event-ID`) after a dropped connection; where the
 * browser gives up (an error status, or a proxy's answer that is not an event stream), its own
 * from the last id (`?lastEventId=`), after 1 s, then 2, 4… up to 30 s, asking the stream's
 * address meanwhile whether it is refused (`unauthorized`) or away (`reconnecting`).
 * A message whose type is `open` or `error` (a name an application may publish) reaches the
 * EventSource's own `open` and `error` listeners too: they take only the connection's events,
 * which are no MessageEvent.
 */
class EventStream {
  #baseUrl;
  #path;
  /** @type {StreamHooks} */
  #hooks;
  /** @type {EventSource|null} */
  #source = null;
  /** @type {State} */
  #state = "connecting";
  #lastEventId;
  #delay = RECONNECT_MIN_MS;
  #timer = 0;
  #retries = 0; // tells a probe's answer whether its retry is still the current one

  /** @param {string} baseUrl @param {string} path With its query. @param {StreamHooks} hooks */
  constructor(baseUrl, path, hooks) {
    this.#baseUrl = baseUrl;
    this.#path = path;
    this.#hooks = hooks;
    this.#lastEventId = hooks.lastEventId ?? "";
    this.#connect();
  }

  /** @returns {State} */
  get state() {
    return this.#state;
  }

  get lastEventId() {
    return this.#lastEventId;
  }

  /** Keep a delivered message's id: where the stream resumes from.
   *  @param {MessageEvent} message */
  remember(message) {
    if (message.lastEventId) this.#lastEventId = message.lastEventId;
  }

  close() {
    if (this.#state === "closed") return;
    clearTimeout(this.#timer);
    this.#source?.close();
    this.#setState("closed", {});
  }

  #connect() {
    // A fresh EventSource cannot send Last-Event-ID; the server takes it as a parameter. Its
    // own reconnections send the header, which the server prefers.
    const join = this.#path.includes("?") ? "&" : "?";
    const resume = this.#lastEventId ? `${join}lastEventId=${encodeURIComponent(this.#lastEventId)}` : "";
    const url = resolve(this.#baseUrl, this.#path + resume);
    const source = this.#source = new EventSource(url, { withCredentials: crossOrigin(url) });
    source.addEventListener("open", (event) => {
      if (event instanceof MessageEvent) return; // a message typed `open`
      this.#delay = RECONNECT_MIN_MS;
      this.#setState("live", {});
    });
    source.addEventListener("error", (event) => {
      if (event instanceof MessageEvent) return; // a message typed `error`
      if (source !== this.#source || this.#state === "closed") return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error status, or a proxy's answer that is not a stream).
        this.#retry(url);
      } else if (this.#state !== "reconnecting") {
        // It reconnects by itself, resuming with Last-Event-ID.
        this.#setState("reconnecting", {});
      }
    });
    this.#hooks.listen(source);
  }

  /** Reconnect by ourselves from the last id, backing off; meanwhile ask why it failed.
   *  @param {string} url */
  #retry(url) {
    this.#source?.close();
    const retryInMs = this.#delay;
    this.#timer = setTimeout(() => this.#connect(), retryInMs);
    this.#delay = Math.min(this.#delay * 2, RECONNECT_MAX_MS);
    this.#setState("reconnecting", { retryInMs });
    this.#probe(url, ++this.#retries, retryInMs);
  }

  /** EventSource does not tell an error status from a network error: ask the stream's URL
   *  itself (not a list of topics, which a token without these topics may still read), and
   *  hang up as soon as the status is in.
   *  @param {string} url @param {number} retry @param {number} retryInMs */
  async #probe(url, retry, retryInMs) {
    const hangUp = new AbortController();
    try {
      const response = await fetch(url, {
        cache: "no-store",
        credentials: crossOrigin(url) ? "include" : "same-origin",
        signal: hangUp.signal,
      });
      hangUp.abort();
      const refused = response.status === 401 || response.status === 403;
      if (refused && retry === this.#retries && this.#state === "reconnecting") {
        this.#setState("unauthorized", { retryInMs });
      }
    } catch (_error) { /* unreachable: "reconnecting" says it already */ }
  }

  /** @param {State} state @param {StatusDetail} detail */
  #setState(state, detail) {
    this.#state = state;
    this.#hooks.onStatus?.(state, detail);
  }
}

// ------------------------------------------------------------------------ the subscription

/**
 * Subscribe to topics: one EventSource for all of them (see SubscribeOptions).
 * @param {SubscribeOptions} options
 * @returns {Subscription}
 */
export function subscribe(options) {
  return new Subscription(options);
}

/**
 * A stream message held or handed over: an update or a point, with its parsed id.
 * @typedef {Object} Message
 * @property {"update"|"point"} kind
 * @property {ParsedId} id
 * @property {Update|Point} data
 */

/**
 * A topic whose history is loading: its live messages `held` meanwhile; `again` when a gap
 * asks for a further read once this one is done; `gapKnown` once a gap was signalled (a
 * history that cannot continue then says nothing new).
 * @typedef {Object} Loading
 * @property {Message[]} held
 * @property {boolean} again
 * @property {boolean} gapKnown
 */

/**
 * A live subscription (made by `subscribe`). Its stream reconnects by itself until `close()`.
 */
export class Subscription {
  /** @type {SubscribeOptions} */
  #options;
  #topics;
  #baseUrl;
  /** @type {EventStream} */
  #stream;
  #opened = false; // the first snapshot arrived: histories asked for now reach the stream
  #abort = new AbortController();
  /** @type {(update: Update) => Update} */
  #project;
  /** @type {Map<string, ParsedId>} the newest id handed over, per topic */
  #newest = new Map();
  /** @type {Map<string, Loading>} topics whose history is loading */
  #catchingUp = new Map();

  /** @param {SubscribeOptions} options */
  constructor(options) {
    this.#options = options;
    this.#topics = list(options.topics);
    if (this.#topics.length === 0) throw new TypeError("subscribe: give at least one topic");
    this.#baseUrl = options.baseUrl ?? SERVER_ROOT;
    const params = new URLSearchParams();
    for (const topic of this.#topics) params.append("topic", topic);
    const windows = list(options.windows);
    const stats = list(options.stats);
    const series = list(options.series);
    this.#project = projection(windows, stats);
    if (windows.length) params.append("windows", windows.join(","));
    if (stats.length) params.append("stats", stats.join(","));
    if (series.length) params.append("series", series.join(","));
    for (const filter of groupFilters(options.group)) params.append("group", filter);
    this.#stream = new EventStream(this.#baseUrl, `stream?${params}`, {
      onStatus: options.onStatus,
      listen: (source) => {
        source.addEventListener("snapshot", (message) => this.#snapshot(message));
        source.addEventListener("stats", (message) => this.#receive(message, "update"));
        source.addEventListener("point", (message) => this.#receive(message, "point"));
        source.addEventListener("alert", (message) => {
          this.#stream.remember(message);
          this.#options.onAlert?.(JSON.parse(message.data));
        });
      },
    });
  }

  /** @returns {State} */
  get state() {
    return this.#stream.state;
  }

  /** The id of the last message the stream delivered ("" before the first): where the
   *  subscription resumes from. */
  get lastEventId() {
    return this.#stream.lastEventId;
  }

  /** Stop: the stream, any retry and any history being read. */
  close() {
    if (this.#stream.state === "closed") return;
    this.#abort.abort();
    this.#catchingUp.clear();
    this.#stream.close();
  }

  /** @param {MessageEvent} message */
  #snapshot(message) {
    this.#stream.remember(message);
    /** @type {Snapshot} */
    const snapshot = JSON.parse(message.data);
    this.#options.onSnapshot?.(snapshot);
    if (snapshot.gap) this.#options.onGap?.({ snapshot, topic: null });
    const first = !this.#opened;
    this.#opened = true;
    if (this.#options.history === undefined) return;
    // Topics named, and those a pattern matched that have data: history can hold only theirs.
    const named = this.#topics.filter((t) => !t.endsWith("*"));
    if (first) {
      this.#catchUp(new Set([...named, ...Object.keys(snapshot.topics)]), false);
    } else if (snapshot.gap) {
      // What the server still keeps after the last update handed over (the gap is signalled
      // already: a history that cannot continue from that id says nothing new).
      const seen = this.#newest.keys();
      this.#catchUp(new Set([...named, ...Object.keys(snapshot.topics), ...seen]), true);
    }
  }

  /** @param {MessageEvent} message @param {"update"|"point"} kind */
  #receive(message, kind) {
    this.#stream.remember(message);
    const data = JSON.parse(message.data);
    const id = parseId(data.id);
    if (id === null) return;
    const loading = this.#catchingUp.get(data.topic);
    // Held until its topic's history has caught up to it.
    if (loading) loading.held.push({ kind, id, data });
    else this.#handOver({ kind, id, data });
  }

  /** Each message once, in id order per topic: one not after the topic's newest handed over
   *  is one the history already gave.
   *  @param {Message} message */
  #handOver(message) {
    const { topic } = message.data;
    const newest = this.#newest.get(topic);
    if (newest !== undefined && !isAfter(message.id, newest)) return;
    this.#newest.set(topic, message.id);
    if (message.kind === "update") this.#options.onUpdate?.(/** @type {Update} */ (message.data));
    else this.#options.onPoint?.(/** @type {Point} */ (message.data));
  }

  /** Load the histories of `topics`, a few at a time, holding each one's live messages until
   *  its history is in. A topic already loading reads `again` once done.
   *  @param {Set<string>} topics @param {boolean} afterGap */
  async #catchUp(topics, afterGap) {
    /** @type {string[]} */
    const queue = [];
    for (const topic of topics) {
      const loading = this.#catchingUp.get(topic);
      if (loading) {
        loading.again = true;
        loading.gapKnown ||= afterGap;
      } else {
        this.#catchingUp.set(topic, { held: [], again: false, gapKnown: afterGap });
        queue.push(topic);
      }
    }
    const worker = async () => {
      while (queue.length) await this.#loadTopic(/** @type {string} */ (queue.shift()));
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_HISTORIES, queue.length) }, worker));
  }

  /** @param {string} topic */
  async #loadTopic(topic) {
    const loading = this.#catchingUp.get(topic);
    if (loading === undefined) return; // closed meanwhile
    try {
      do {
        loading.again = false;
        const newest = this.#newest.get(topic);
        // From the last update handed over, else as the caller asked.
        const from = newest ? { since: newest.text, limit: this.#options.history?.limit }
          : { ...this.#options.history };
        if (!(await this.#readHistory(topic, from, loading))) return;
      } while (loading.again);
    } finally {
      if (this.#catchingUp.get(topic) === loading) {
        this.#catchingUp.delete(topic);
        for (const message of loading.held) this.#handOver(message);
      }
    }
  }

  /** Hand over `topic`'s history from `from`, page by page, each merged in id order with
   *  the live messages held that it reaches. False when it could not be read.
   *  @param {string} topic @param {HistoryOptions} from @param {Loading} loading */
  async #readHistory(topic, from, loading) {
    let { since } = from;
    const { limit } = from;
    for (;;) {
      /** @type {HistoryPage} */
      let page;
      try {
        page = await fetchHistory(topic, {
          since, limit, group: this.#options.group, baseUrl: this.#baseUrl,
          signal: this.#abort.signal,
        });
      } catch (error) {
        if (!this.#abort.signal.aborted && !this.#nothingToRead(error)) {
          // The live updates go on, but what came before them is not known.
          this.#options.onGap?.({ snapshot: null, topic });
        }
        return false;
      }
      if (this.#stream.state === "closed") return false;
      if (page.gap && !loading.gapKnown) {
        loading.gapKnown = true;
        this.#options.onGap?.({ snapshot: null, topic });
      }
      const updates = page.updates.map(this.#project);
      const reached = updates.length ? parseId(updates[updates.length - 1].id) : null;
      let held = 0; // how many of the held messages this page reaches
      while (reached && held < loading.held.length && !isAfter(loading.held[held].id, reached)) {
        held++;
      }
      /** @type {Message[]} */
      const fromHistory = updates.map((data) => ({
        kind: "update", id: /** @type {ParsedId} */ (parseId(data.id)), data,
      }));
      for (const message of mergeById(fromHistory, loading.held.splice(0, held))) {
        this.#handOver(message);
      }
      if (since === undefined || !page.more || page.resume_id === null) return true;
      since = page.resume_id;
    }
  }

  /** A refusal that loses nothing: a group filter naming tags the topic does not group by
   *  (a 400; its stream has nothing of it either).
   *  @param {unknown} error */
  #nothingToRead(error) {
    return error instanceof HttpError && error.status === 400 && this.#options.group !== undefined;
  }
}

/**
 * What the server's `?windows=&stats=` does to a stream's updates, for the history's (which
 * come whole): a function from an update to the update with only those windows and stats
 * (those the topic keeps; a window left with none of the stats is left out, as the server
 * leaves it out of a pattern stream).
 * @param {string[]} windows @param {string[]} stats
 * @returns {(update: Update) => Update}
 */
function projection(windows, stats) {
  if (!windows.length && !stats.length) return (update) => update;
  /** @param {Object<string, any>} all @param {string[]} names */
  const only = (all, names) => Object.fromEntries(
    names.filter((name) => name in all).map((name) => [name, all[name]]),
  );
  /** @param {Windows} all @returns {Windows} */
  const cut = (all) => {
    const kept = windows.length ? only(all, windows) : all;
    if (!stats.length) return kept;
    return Object.fromEntries(
      Object.entries(kept)
        .map(([w, values]) => [w, only(values, stats)])
        .filter(([, values]) => Object.keys(values).length > 0),
    );
  };
  return (update) => {
    const projected = { ...update, windows: cut(update.windows) };
    /** @param {GroupWindows} group */
    const cutGroup = (group) => ({ key: group.key, windows: cut(group.windows) });
    if (update.group) projected.group = cutGroup(update.group);
    if (update.groups) projected.groups = update.groups.map(cutGroup);
    return projected;
  };
}

// ------------------------------------------------------------------------ messages

// What the server's messages streams send (docs/api.md): a message without a type is
// `message` (what `onmessage` receives); `gap` is the server's own; a type is at most 64
// letters, digits and `._:-`.
const DEFAULT_TYPE = "message";
const GAP_TYPE = "gap";
const MESSAGE_TYPE = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * One message as the application published it (an event's `type` and `data`).
 * @typedef {Object} PushedMessage
 * @property {string} type Its type, the SSE event name: `message` when it was published
 *   without one.
 * @property {any} data Its data as published, parsed (`JSON.parse`: as anywhere in
 *   JavaScript, an integer beyond 2**53 comes as the nearest double).
 * @property {string} id The id the stream sent with it: its update's id, or on a stream of
 *   several partitions a cursor over them. Opaque: where a stream resumes after it.
 */

/**
 * Messages may have been lost: the stream could not resume from its last id (the server's
 * history no longer covers it, or it is of another epoch); it goes on live from here (after an
 * id of another epoch, a restart that lost the history, with every message of the new one first).
 * @typedef {Object} MessageGap
 * @property {string[]} topics The topics whose messages may be missing.
 */

/**
 * @typedef {Object} MessagesOptions
 * @property {string|string[]} topics Topic names, or prefix patterns like `orders.*`.
 * @property {Object<string, (data: any, message: PushedMessage) => void>} [on] A handler per
 *   type, e.g. `{shipped(data) {…}}`: the messages of that type.
 * @property {string|string[]} [types] More types to receive, for `onMessage` (an EventSource
 *   dispatches by type, so the types are named up front).
 * @property {(message: PushedMessage) => void} [onMessage] Every message received: of the types
 *   in `on`, in `types`, and `message`.
 * @property {(gap: MessageGap) => void} [onGap]
 * @property {(state: State, detail: StatusDetail) => void} [onStatus] As `subscribe`'s.
 * @property {number} [replay] Start with the topics' last N messages (1 to 1000), then live.
 * @property {string} [lastEventId] Resume after this id (one a `PushedMessage` had, kept by
 *   the page, e.g. in sessionStorage): every message after it, or a gap.
 * @property {string} [baseUrl] As `subscribe`'s.
 */

/**
 * Receive the application's messages of topics as published (`GET messages?topic=…`): one
 * EventSource for all of them, resuming from the last id after any reconnection.
 * @param {MessagesOptions} options
 * @returns {MessageSubscription}
 */
export function messages(options) {
  return new MessageSubscription(options);
}

/** A live messages stream (made by `messages`). It reconnects by itself until `close()`. */
export class MessageSubscription {
  /** @type {MessagesOptions} */
  #options;
  /** @type {EventStream} */
  #stream;
  /** @type {string[]} */
  #types;

  /** @param {MessagesOptions} options */
  constructor(options) {
    this.#options = options;
    const topics = list(options.topics);
    if (topics.length === 0) throw new TypeError("messages: give at least one topic");
    const types = new Set([DEFAULT_TYPE, ...Object.keys(options.on ?? {}), ...list(options.types)]);
    for (const type of types) {
      if (!MESSAGE_TYPE.test(type) || type === GAP_TYPE) {
        throw new TypeError(`messages: ${JSON.stringify(type)} is no message type`);
      }
    }
    this.#types = [...types];
    const params = new URLSearchParams();
    for (const topic of topics) params.append("topic", topic);
    if (options.replay !== undefined) params.append("replay", String(options.replay));
    this.#stream = new EventStream(options.baseUrl ?? SERVER_ROOT, `messages?${params}`, {
      lastEventId: options.lastEventId,
      onStatus: options.onStatus,
      listen: (source) => {
        for (const type of this.#types) {
          source.addEventListener(type, (event) => this.#receive(type, event));
        }
        source.addEventListener(GAP_TYPE, (event) => {
          this.#stream.remember(event);
          this.#options.onGap?.(JSON.parse(event.data));
        });
      },
    });
  }

  /** @returns {State} */
  get state() {
    return this.#stream.state;
  }

  /** The id of the last message (or gap) the stream delivered, "" before the first: where it
   *  resumes from, and what a page keeps to resume a later one (`lastEventId`). */
  get lastEventId() {
    return this.#stream.lastEventId;
  }

  /** The types it receives. */
  get types() {
    return [...this.#types];
  }

  close() {
    this.#stream.close();
  }

  /** @param {string} type @param {Event} event */
  #receive(type, event) {
    // A type `open` or `error` is also the name of the connection's own events.
    if (!(event instanceof MessageEvent)) return;
    this.#stream.remember(event);
    /** @type {PushedMessage} */
    const message = { type, data: JSON.parse(event.data), id: event.lastEventId };
    const on = this.#options.on;
    // Own handlers only: a type may well be called "constructor".
    if (on !== undefined && Object.hasOwn(on, type)) on[type](message.data, message);
    this.#options.onMessage?.(message);
  }
}

/**
 * Two lists of messages in id order as one, in id order (equal ids: `a`'s first).
 * @param {Message[]} a @param {Message[]} b
 * @returns {Message[]}
 */
function mergeById(a, b) {
  const merged = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && !isAfter(a[i].id, b[j].id))) merged.push(a[i++]);
    else merged.push(b[j++]);
  }
  return merged;
}
