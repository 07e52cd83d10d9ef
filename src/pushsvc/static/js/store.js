// What the page knows per topic: its points (one per update, from the history and the
// stream), merged by update id so that history and live data meet with no gap and no
// duplicate, and its latest numbers. A grouping topic also has its live groups, each with
// its recent updates: the group's part of the topic's updates (`groupPart`). A topic whose
// events carry messages keeps its latest few, their data as JSON text: the points keep no
// event, so a topic of 64 KiB messages costs the page LATEST_MESSAGES of them, not one per
// point.

import { groupId, groupUpdates, isAfter, parseId } from "../pushsvc.js";

export const MAX_POINTS = 2000;
/** Updates kept per live group of a grouping topic, for its sparkline. */
export const GROUP_POINTS = 60;
/** Messages kept per topic (and group) for the topic view's list: the newest. */
export const LATEST_MESSAGES = 10;
/** A message's data is kept as JSON text up to this many characters; its length is kept. */
export const MESSAGE_TEXT_MAX = 8192;

/** An event's value, or null when it has none (a message without one) or for a tick. */
function valueOf(event) {
  return event && typeof event.value === "number" ? event.value : null;
}

/** The message an update's event carries ({id, ts, type, text, length}: its data as compact
 *  JSON text, cut at MESSAGE_TEXT_MAX characters), or null. */
export function messageOf(id, event) {
  if (!event || typeof event.type !== "string") return null;
  const full = JSON.stringify(event.data === undefined ? null : event.data);
  return {
    id, ts: event.ts ?? null, type: event.type,
    text: full.length > MESSAGE_TEXT_MAX ? full.slice(0, MESSAGE_TEXT_MAX) : full,
    length: full.length,
  };
}

/** One live group of a grouping topic: its key and its recent updates, whose newest windows
 *  are its current statistics. */
export class Group {
  constructor(key) {
    this.key = key;
    this.id = groupId(key);
    this.series = new Topic(this.id, GROUP_POINTS);
  }
}

/** A topic's updates and latest numbers — or, for a group's series, the group's part of its
 *  topic's updates (`groupPart`). */
export class Topic {
  constructor(name, maxPoints = MAX_POINTS) {
    this.name = name;
    this.maxPoints = maxPoints;
    this.points = []; // {id, ts, value, eventTs, windows, gapBefore}, in id order
    this.ids = new Set();
    this.windows = {}; // latest statistics per window
    this.ts = null; // latest topic clock
    this.value = null; // latest event's value (ticks carry none, nor may a message)
    this.messages = []; // the newest LATEST_MESSAGES messages (`messageOf`), in id order
    // The windows seen counting messages: a window carries `messages` only while it holds
    // one, so one of these without the member holds none (a sketch window never counts).
    this.messageWindows = new Set();
    this.tags = null;
    this.stale = false; // not in the server's state any more (e.g. it restarted)
    this.gapNext = false; // updates were missed: the next point starts a new line
    this.loaded = 0; // the history limit already loaded
    this.groups = new Map(); // group id -> Group: a grouping topic's live groups
    this.version = 0; // bumped on every change, so views redraw only what changed
  }

  /** Add one update (from the stream); false when it is already here. */
  add(update) {
    if (this.ids.has(update.id)) return false;
    const id = parseId(update.id);
    if (id === null) return false;
    const point = {
      id, ts: update.ts, windows: update.windows || {}, value: valueOf(update.event),
      eventTs: update.event ? update.event.ts ?? null : null, gapBefore: this.gapNext,
    };
    this.gapNext = false;
    this.noteMessageWindows(point.windows);
    const last = this.points[this.points.length - 1];
    if (last === undefined || isAfter(id, last.id)) {
      this.points.push(point);
      this.ids.add(update.id);
      this.windows = point.windows;
      this.ts = point.ts;
      if (update.event) {
        if (point.value !== null) this.value = point.value;
        this.tags = update.event.tags || null;
      }
    } else {
      this.insert(point);
    }
    this.addMessage(messageOf(id, update.event));
    this.addGroups(update);
    this.stale = false;
    this.trim();
    this.version++;
    return true;
  }

  /** A live update's groups: a group not seen before is a new live group; a forgotten one
   *  (idle for the topic TTL) is dropped. */
  addGroups(update) {
    for (const { key, id, update: part } of groupUpdates(update)) {
      let group = this.groups.get(id);
      if (group === undefined) {
        group = new Group(key);
        this.groups.set(id, group);
      }
      group.series.add(part);
    }
    for (const key of update.forgotten || []) this.groups.delete(groupId(key));
  }

  /** Merge a history page (oldest first); points already here are skipped. */
  merge(updates) {
    const fresh = updates.filter((u) => !this.ids.has(u.id) && parseId(u.id));
    if (fresh.length === 0) return;
    const tail = this.points[this.points.length - 1];
    for (const update of fresh) {
      const point = {
        id: parseId(update.id), ts: update.ts, windows: update.windows || {},
        value: valueOf(update.event),
        eventTs: update.event ? update.event.ts ?? null : null, gapBefore: false,
      };
      this.insert(point);
      this.noteMessageWindows(point.windows);
      this.addMessage(messageOf(point.id, update.event));
    }
    const last = this.points[this.points.length - 1];
    if (last !== tail) {
      this.windows = last.windows;
      this.ts = last.ts;
    }
    if (this.value === null || last !== tail) {
      for (let i = fresh.length - 1; i >= 0; i--) {
        if (fresh[i].event) {
          this.tags = fresh[i].event.tags || null;
          break;
        }
      }
      for (let i = fresh.length - 1; i >= 0; i--) {
        const value = valueOf(fresh[i].event);
        if (value !== null) {
          this.value = value;
          break;
        }
      }
    }
    this.mergeGroups(fresh);
    this.trim();
    this.version++;
  }

  /** A history page's groups, into the live groups only: which groups are live is the
   *  stream's to say (its snapshot, new groups, forgotten ones), and a page may hold groups
   *  forgotten since. */
  mergeGroups(updates) {
    if (this.groups.size === 0) return;
    const parts = new Map();
    for (const update of updates) {
      for (const { id, update: part } of groupUpdates(update)) {
        if (!this.groups.has(id)) continue;
        if (!parts.has(id)) parts.set(id, []);
        parts.get(id).push(part);
      }
    }
    for (const [id, list] of parts) this.groups.get(id).series.merge(list);
  }

  /** Remember the windows of `windows` that count messages (carry a `messages` member). */
  noteMessageWindows(windows) {
    for (const [window, stats] of Object.entries(windows)) {
      if (stats && stats.messages !== null && typeof stats.messages === "object") {
        this.messageWindows.add(window);
      }
    }
  }

  /** A message (`messageOf`, or null: none) among the newest, in id order; an older one than
   *  those kept, or one kept already, changes nothing. */
  addMessage(message) {
    if (message === null) return;
    const list = this.messages;
    let i = list.length;
    while (i > 0 && message.id.epoch === list[i - 1].id.epoch && isAfter(list[i - 1].id, message.id)) i--;
    if (i > 0 && list[i - 1].id.text === message.id.text) return;
    list.splice(i, 0, message);
    if (list.length > LATEST_MESSAGES) list.splice(0, list.length - LATEST_MESSAGES);
  }

  insert(point) {
    // From the end: history pages meet the live points near it.
    let i = this.points.length;
    while (i > 0 && point.id.epoch === this.points[i - 1].id.epoch
      && isAfter(this.points[i - 1].id, point.id)) i--;
    this.points.splice(i, 0, point);
    this.ids.add(point.id.text);
  }

  trim() {
    const excess = this.points.length - this.maxPoints;
    if (excess <= 0) return;
    for (const gone of this.points.splice(0, excess)) this.ids.delete(gone.id.text);
  }

  /** The latest statistics from a snapshot (no event in it). A grouping topic's entry
   *  lists its live groups: `complete` when they are all of them (a stream's snapshot), so
   *  that any other group is gone. */
  snapshot(entry, gap, complete = true) {
    const id = parseId(entry.id);
    const last = this.points[this.points.length - 1];
    if (id && (last === undefined || isAfter(id, last.id))) {
      this.windows = entry.windows || {};
      this.noteMessageWindows(this.windows);
      this.ts = entry.ts;
    }
    if (entry.groups) {
      const live = new Set();
      for (const part of entry.groups) {
        const group = this.groups.get(groupId(part.key)) || new Group(part.key);
        this.groups.set(group.id, group);
        live.add(group.id);
        group.series.snapshot({ id: entry.id, ts: entry.ts, windows: part.windows }, gap);
      }
      if (complete) {
        for (const gone of [...this.groups.keys()].filter((g) => !live.has(g))) this.groups.delete(gone);
      }
    }
    if (gap && this.points.length) this.gapNext = true;
    this.stale = false;
    this.version++;
  }

  /** Not in the server's state any more (e.g. it restarted); with `gap` (the snapshot saying
   *  so is a gap's), updates were missed too: the next point starts a new line. A gap
   *  snapshot names only the topics the server has now, so a topic it lost is told here. */
  markStale(gap = false) {
    if (gap && this.points.length) this.gapNext = true;
    if (gap) for (const group of this.groups.values()) if (group.series.points.length) group.series.gapNext = true;
    if (!this.stale) { this.stale = true; this.version++; }
  }
}

export class Store {
  constructor() {
    this.topics = new Map();
    // Every topic's name in name order, kept so as topics come: a page that knows 100,000
    // topics lists its first few without sorting them all.
    this.names = [];
    this.rules = null; // GET rules, once read
  }

  topic(name) {
    let topic = this.topics.get(name);
    if (topic === undefined) {
      topic = new Topic(name);
      this.topics.set(name, topic);
      this.names.splice(sortedIndex(this.names, name), 0, name);
    }
    return topic;
  }

  sorted() {
    return this.names.map((name) => this.topics.get(name));
  }

  /** The time the page's charts are at: the newest topic clock it knows (the demo's simulated
   *  time, a replay's), else the browser's (epoch seconds). What a note of when something
   *  happened (a gap) says, so that it can be found on the charts. */
  now() {
    return this.clock() ?? Date.now() / 1000;
  }

  /** The newest topic clock the page knows (epoch seconds), or null before any update. */
  clock() {
    let newest = null;
    for (const topic of this.topics.values()) {
      if (topic.ts !== null && (newest === null || topic.ts > newest)) newest = topic.ts;
    }
    return newest;
  }
}

/** Where `name` goes in the sorted `names` (binary search). */
export function sortedIndex(names, name) {
  let low = 0;
  let high = names.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (names[middle] < name) low = middle + 1;
    else high = middle;
  }
  return low;
}
