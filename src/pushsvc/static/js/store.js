// What the page knows per topic: its points (one per update, from the history and the
// stream), merged by update id so that history and live data meet with no gap and no
// duplicate, and its latest numbers.

export const MAX_POINTS = 2000;

/** `epoch:ms-seq` parsed; ids of one epoch compare by (ms, seq). Null when not an id. */
export function parseId(text) {
  const match = /^([0-9a-f]{1,16}):(\d{1,20})-(\d{1,20})$/.exec(text || "");
  return match ? { text, epoch: match[1], ms: BigInt(match[2]), seq: BigInt(match[3]) } : null;
}

/** Whether `a` comes after `b`. As on the server, an id of another epoch (a history reset
 *  after `b` was issued) counts as newer. */
export function isAfter(a, b) {
  if (a.epoch !== b.epoch) return true;
  return a.ms > b.ms || (a.ms === b.ms && a.seq > b.seq);
}

export class Topic {
  constructor(name) {
    this.name = name;
    this.points = []; // {id, ts, value, windows, gapBefore}, in id order
    this.ids = new Set();
    this.windows = {}; // latest statistics per window
    this.ts = null; // latest topic clock
    this.value = null; // latest event's value (ticks carry none)
    this.tags = null;
    this.stale = false; // not in the server's state any more (e.g. it restarted)
    this.gapNext = false; // updates were missed: the next point starts a new line
    this.loaded = 0; // the history limit already loaded
    this.version = 0; // bumped on every change, so views redraw only what changed
  }

  /** Add one update (from the stream); false when it is already here. */
  add(update) {
    if (this.ids.has(update.id)) return false;
    const id = parseId(update.id);
    if (id === null) return false;
    const point = {
      id, ts: update.ts, windows: update.windows || {},
      value: update.event ? update.event.value : null, gapBefore: this.gapNext,
    };
    this.gapNext = false;
    const last = this.points[this.points.length - 1];
    if (last === undefined || isAfter(id, last.id)) {
      this.points.push(point);
      this.ids.add(update.id);
      this.windows = point.windows;
      this.ts = point.ts;
      if (update.event) { this.value = update.event.value; this.tags = update.event.tags || null; }
    } else {
      this.insert(point);
    }
    this.stale = false;
    this.trim();
    this.version++;
    return true;
  }

  /** Merge a history page (oldest first); points already here are skipped. */
  merge(updates) {
    const fresh = updates.filter((u) => !this.ids.has(u.id) && parseId(u.id));
    if (fresh.length === 0) return;
    const tail = this.points[this.points.length - 1];
    for (const update of fresh) {
      const point = {
        id: parseId(update.id), ts: update.ts, windows: update.windows || {},
        value: update.event ? update.event.value : null, gapBefore: false,
      };
      this.insert(point);
    }
    const last = this.points[this.points.length - 1];
    if (last !== tail) {
      this.windows = last.windows;
      this.ts = last.ts;
    }
    if (this.value === null || last !== tail) {
      for (let i = fresh.length - 1; i >= 0; i--) {
        if (fresh[i].event) {
          this.value = fresh[i].event.value;
          this.tags = fresh[i].event.tags || null;
          break;
        }
      }
    }
    this.trim();
    this.version++;
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
    const excess = this.points.length - MAX_POINTS;
    if (excess <= 0) return;
    for (const gone of this.points.splice(0, excess)) this.ids.delete(gone.id.text);
  }

  /** The latest statistics from a snapshot (no event in it). */
  snapshot(entry, gap) {
    const id = parseId(entry.id);
    const last = this.points[this.points.length - 1];
    if (id && (last === undefined || isAfter(id, last.id))) {
      this.windows = entry.windows || {};
      this.ts = entry.ts;
    }
    if (gap && this.points.length) this.gapNext = true;
    this.stale = false;
    this.version++;
  }

  markStale() {
    if (!this.stale) { this.stale = true; this.version++; }
  }
}

export class Store {
  constructor() { this.topics = new Map(); }

  topic(name) {
    let topic = this.topics.get(name);
    if (topic === undefined) { topic = new Topic(name); this.topics.set(name, topic); }
    return topic;
  }

  sorted() {
    return [...this.topics.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}
