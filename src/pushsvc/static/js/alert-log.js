// The alert changes the page knows, and their one owner: the alerts bar and the topic view's
// bands both read it. One subscription of `_alerts` (pushsvc.js: it reconnects and resumes);
// each time it (re)connects, the recent changes (GET topics/_alerts/history) and the
// instances active now (GET alerts: an instance firing since before the history reaches still
// shows); then every live change. Changes are merged by id, so one read both ways counts once.
// Each read REPLACES what the page knew, keeping only the live changes that arrived while it
// was under way: a server restarted without its history (or with other rules) has no record
// of the instances the page saw firing, and would never send the changes that end them.
// Only on servers with alert rules. With auth on, the server answers only the instances of
// topics the page's token may read.

import { fetchJson, groupId, isAfter, parseId, subscribe } from "../pushsvc.js";

const KEPT_CHANGES = 2000; // the newest changes kept (and asked of the history)
// Within one instance, at one topic-clock time: the order its states follow (a pending
// instance that cleared may turn pending again at the same clock, never the other way round
// in what GET alerts answers: it lists only pending and firing instances).
const STATE_ORDER = { inactive: -1, pending: 0, firing: 1, resolved: 2 };

/** An instance's identity: its alert, topic and group. */
export function instanceKey(change) {
  return JSON.stringify([change.alert, change.topic, change.group === null ? null : groupId(change.group)]);
}

export class AlertLog {
  constructor() {
    this.changes = []; // {id (parsed), change}, in id order
    this.ids = new Set();
    this.active = new Map(); // instance key -> its change as GET alerts answered (no id)
    this.rules = new Map(); // alert name -> its rule as GET rules answered ({when, ...})
    this.listeners = [];
    this.reads = 0; // reads begun: only the newest one's answers are taken
    this.arrived = []; // the live changes since the newest read began
  }

  /** `listener()` runs after what the log knows changed. */
  onChange(listener) {
    this.listeners.push(listener);
  }

  async start() {
    try {
      const rules = await fetchJson("rules");
      if (!rules.alerts || rules.alerts.length === 0) return;
      this.rules = new Map(rules.alerts.map((rule) => [rule.name, rule]));
    } catch (_error) {
      return;
    }
    let opened = false;
    this.subscription = subscribe({
      topics: "_alerts",
      // A connection that resumed (no snapshot) replays what it missed; one that did not (a
      // restart, a gap) starts with a snapshot. Either way the server's state is read again:
      // what a server that restarted no longer has must leave the page.
      onStatus: (state) => {
        if (state === "live" && opened) this.load();
      },
      onSnapshot: () => {
        if (opened) return; // its connection's "live" began a read already
        opened = true;
        this.load();
      },
      onAlert: (change) => {
        this.arrived.push(change);
        if (this.add(change)) this.changed();
      },
    });
  }

  /** Read the server's recent changes and active instances, in place of what the page knew
   *  (the live changes that arrive meanwhile are kept: they are newer than what the page
   *  knew and may be newer than the answers). A read begun later wins over one begun
   *  earlier. */
  async load() {
    const read = ++this.reads;
    this.arrived = [];
    const [history, active, rules] = await Promise.allSettled([
      fetchJson(`topics/_alerts/history?limit=${KEPT_CHANGES}`), fetchJson("alerts"),
      fetchJson("rules"),
    ]);
    if (read !== this.reads) return;
    // Where the history cannot be read, what the page saw before is no surer: the live
    // changes since, and GET alerts, are what it goes on.
    const known = history.status === "fulfilled" ? history.value.updates : [];
    this.changes = [];
    this.ids = new Set();
    for (const change of [...known, ...this.arrived]) this.add(change);
    this.active = new Map(active.status === "fulfilled"
      ? active.value.alerts.map((change) => [instanceKey(change), change]) : []);
    if (rules.status === "fulfilled" && rules.value.alerts) {
      this.rules = new Map(rules.value.alerts.map((rule) => [rule.name, rule]));
    }
    this.changed();
  }

  /** Merge one change (from the history or the stream); false when it is here already. */
  add(change) {
    const id = parseId(change.id);
    if (id === null || this.ids.has(change.id)) return false;
    // From the end: history pages meet the live changes near it.
    let i = this.changes.length;
    while (i > 0 && id.epoch === this.changes[i - 1].id.epoch && isAfter(this.changes[i - 1].id, id)) i--;
    this.changes.splice(i, 0, { id, change });
    this.ids.add(change.id);
    const excess = this.changes.length - KEPT_CHANGES;
    if (excess > 0) for (const gone of this.changes.splice(0, excess)) this.ids.delete(gone.id.text);
    return true;
  }

  changed() {
    for (const listener of this.listeners) listener();
  }

  /** The instances firing now, each as its latest change. */
  firing() {
    return [...this.instances().values()]
      .map((sequence) => sequence[sequence.length - 1])
      .filter((change) => change.state === "firing");
  }

  /** When instances of `topic` fired, oldest first: {alert, topic, group, from, to} (topic
   *  clock seconds; `to` null while it fires). With `group` (a key) only that group's
   *  instance; without, the topic's own and its groups'. A resolved change whose firing one
   *  is older than the log reaches marks nothing: its start is unknown. */
  periods(topic, group = null) {
    const wanted = group === null ? null : groupId(group);
    const periods = [];
    for (const sequence of this.instances().values()) {
      const { alert, group: key } = sequence[0];
      if (sequence[0].topic !== topic) continue;
      if (wanted !== null && (key === null || groupId(key) !== wanted)) continue;
      let open = null;
      for (const change of sequence) {
        if (change.state === "firing" && open === null) {
          open = { alert, topic, group: key, from: change.since, to: null };
        } else if (change.state === "resolved" && open !== null) {
          open.to = change.since;
          periods.push(open);
          open = null;
        }
      }
      if (open !== null) periods.push(open);
    }
    return periods.sort((a, b) => a.from - b.from || a.alert.localeCompare(b.alert));
  }

  /** Instance key -> its changes, oldest first: those with ids in id order, then the active
   *  one GET alerts answered where it is newer than them all. */
  instances() {
    const instances = new Map();
    for (const { change } of this.changes) {
      const key = instanceKey(change);
      if (!instances.has(key)) instances.set(key, []);
      instances.get(key).push(change);
    }
    for (const [key, change] of this.active) {
      const sequence = instances.get(key);
      if (sequence === undefined) instances.set(key, [change]);
      else if (isNewer(change, sequence[sequence.length - 1])) sequence.push(change);
    }
    return instances;
  }
}

/** Whether `a` follows `b`, two changes of one instance: its topic clock never goes back. */
function isNewer(a, b) {
  return a.since > b.since || (a.since === b.since && STATE_ORDER[a.state] > STATE_ORDER[b.state]);
}

