// pushsvc dashboard: the overview of every topic, a topic view at #/topics/NAME (with its
// groups table for a grouping topic), and one group's view at #/topics/NAME?group=...
// One EventSource for all topics (browsers allow ~6 HTTP/1.1 connections per host): a
// group's updates are picked out of it here, as its history is out of the topic's. One more
// for `_alerts`, on servers with alert rules: its AlertLog feeds the alerts bar and the topic
// view's bands alike.

import { groupId, groupPart } from "../pushsvc.js";
import { parseRoute } from "./address.js";
import { AlertLog } from "./alert-log.js";
import { AlertsBar } from "./alerts.js";
import { AnomalyRanking } from "./anomalies.js";
import { Connection, loadGroupHistory, loadHistory, serverFilter } from "./connection.js";
import { formatTime } from "./format.js";
import { GroupsTable, groupLabel } from "./groups.js";
import { Overview } from "./overview.js";
import { PresenceBadges } from "./presence.js";
import { MAX_POINTS, Store, Topic } from "./store.js";
import { TopicView } from "./topic.js";

const OVERVIEW_HISTORY = 120; // updates loaded per topic for the overview's small charts
const TOPIC_HISTORY = MAX_POINTS; // for a topic view
// For a group's view: the history's limit counts the topic's updates before the group
// filter, so a group gets its share of this many. Where no tag can be filtered by on the
// server (every tag missing from the group's events), the whole page comes to the browser:
// then no more than a topic view's.
const GROUP_HISTORY = 10000;

const $ = (id) => document.getElementById(id);
const store = new Store();
const alertLog = new AlertLog();
// The alerts bar shows each firing instance's statistic as it stands: drawn again as the
// store changes (it leaves its list be while what it shows does not).
const alertsBar = new AlertsBar({
  section: $("alerts-bar"), list: $("alerts-list"), count: $("alerts-count"),
}, alertLog, store);
const anomalyRanking = new AnomalyRanking(
  { section: $("anomalies"), list: $("anomalies-list") }, () => store.clock(),
);
anomalyRanking.start();
// Tiles on screen load their history and presence; those below the fold wait to be scrolled to.
const overview = new Overview(store, {
  section: $("overview"), grid: $("tiles"), filter: $("filter"), order: $("order"),
  shown: $("shown"), more: $("more"), empty: $("empty"), template: $("tile-template"),
}, (onScreen) => {
  connection.loadHistories(onScreen);
  presenceBadges.fresh();
});
const presenceBadges = new PresenceBadges(overview);
presenceBadges.start();
const topicView = new TopicView({
  section: $("topic-view"), title: $("topic-title"), groupLine: $("group-line"),
  groupName: $("group-name"), wholeTopic: $("whole-topic"), windowSelect: $("window-select"),
  rangeSelect: $("range-select"),
  pause: $("pause"), figures: $("figures"), current: $("current"), value: $("topic-value"),
  rate: $("topic-rate"), time: $("topic-time"), template: $("figure-template"),
  alertPeriods: $("alert-periods"), alertPeriodsList: $("alert-periods-list"),
  tags: $("tag-stats"), sessions: $("session-stats"),
  latestMessages: $("latest-messages"), messageCounts: $("message-counts"),
}, alertLog, () => groupsTable.render(true), () => store.rules);
const groupsTable = new GroupsTable(store, {
  section: $("groups"), count: $("groups-count"), windowSelect: $("groups-window"),
  sparkSelect: $("groups-spark"), table: $("groups-table"),
});
// The group on screen: {name, id, key, series}; its series is fed from the stream and its
// history, picked out of its topic's.
let focus = null;

let queued = false;
function changed() {
  if (queued) return;
  queued = true;
  // One render per frame however many updates arrive, and none while the tab is hidden.
  requestAnimationFrame(() => {
    queued = false;
    anomalyRanking.clockMoved();
    alertsBar.render();
    if (route() === null) {
      overview.render();
      presenceBadges.fresh();
    }
    else {
      topicView.render();
      // Pause holds the groups table too: rows that move under the pointer cannot be read.
      if (!topicView.paused) groupsTable.render();
    }
  });
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
  if (state === "gap") {
    const note = $("resynced");
    note.textContent = `Resynced at ${formatTime(store.now())}: updates were missed ` +
      "while disconnected; the numbers are the server's current state, charts have a break.";
    note.hidden = false;
  }
}

const connection = new Connection(store, {
  status: setStatus,
  // Once the stream is open: the topic on screen, or the overview's tiles on screen.
  firstHistories: () => (route() === null ? overview.onScreenNames() : [route().name]),
  changed,
  update(update) {
    let fresh = store.topic(update.topic).add(update);
    // Whether or not the topic had it already (from its own history page): the group's
    // history page may have been read before it.
    if (focus !== null && focus.name === update.topic) {
      const part = groupPart(update, focus.id);
      if (part !== null && focus.series.add(part)) fresh = true;
      if ((update.forgotten || []).some((key) => groupId(key) === focus.id)) focus.series.markStale();
    }
    if (fresh) changed();
  },
  snapshot(snapshot) {
    const current = snapshot.topics || {};
    for (const [name, entry] of Object.entries(current)) store.topic(name).snapshot(entry, snapshot.gap);
    // A snapshot is the server's whole state for `*`: anything else is gone (a restart).
    for (const topic of store.topics.values()) {
      // hasOwn, not `in`: a topic may well be called "constructor".
      if (!Object.hasOwn(current, topic.name)) topic.markStale(snapshot.gap);
    }
    if (focus !== null) {
      const entry = Object.hasOwn(current, focus.name) ? current[focus.name] : {};
      const part = (entry.groups || []).find((g) => groupId(g.key) === focus.id);
      if (part) focus.series.snapshot({ id: entry.id, ts: entry.ts, windows: part.windows }, snapshot.gap);
      else focus.series.markStale(snapshot.gap);
    }
    changed();
    // The stream is open: the group on screen can load a history page that meets it.
    if (focus !== null && focus.series.loaded === 0) loadFocus(focus);
  },
}, (name) => (route() !== null && route().name === name ? TOPIC_HISTORY : OVERVIEW_HISTORY));

/** The view the address names: {name, group} (group: a key, or null), or null for the
 *  overview. */
function route() {
  return parseRoute(location.hash);
}

async function loadFocus(shown) {
  const filtered = Object.keys(serverFilter(shown.key)).length > 0;
  try {
    await loadGroupHistory(shown.series, shown.name, shown.key, filtered ? GROUP_HISTORY : TOPIC_HISTORY);
  } catch (_error) { /* the stream goes on */ }
  changed();
}

async function navigate() {
  const at = route();
  $("overview").hidden = at !== null;
  $("topic-view").hidden = at === null;
  if (at === null) {
    focus = null;
    topicView.hide();
    groupsTable.hide();
    document.title = "pushsvc — live topics";
    overview.render(true);
    return;
  }
  const { name, group } = at;
  const topic = store.topic(name);
  if (group === null) {
    focus = null;
    document.title = `${name} — pushsvc`;
    topicView.show(topic);
    groupsTable.show(topic);
  } else {
    const id = groupId(group);
    if (focus === null || focus.name !== name || focus.id !== id) {
      focus = { name, id, key: group, series: new Topic(name) };
      // Its latest numbers at once, when it is a live group; its points come with its history.
      const live = topic.groups.get(id);
      if (live !== undefined && live.series.points.length) {
        const last = live.series.points[live.series.points.length - 1];
        focus.series.snapshot({ id: last.id.text, ts: last.ts, windows: live.series.windows }, false);
      }
      if (connection.opened) loadFocus(focus);
    }
    document.title = `${name} · ${groupLabel(group)} — pushsvc`;
    groupsTable.hide();
    topicView.show(topic, focus);
  }
  $("topic-title").focus();
  if (topic.loaded < TOPIC_HISTORY && connection.opened) {
    // Loaded for the overview only: the rest of its history. Points already here (from
    // the stream since) are merged by id, so nothing is drawn twice.
    try { await loadHistory(store, name, TOPIC_HISTORY); } catch (_error) { /* the stream goes on */ }
    changed();
  }
}

window.addEventListener("hashchange", navigate);
navigate();
connection.start();
alertLog.onChange(() => {
  alertsBar.render();
  topicView.showAlerts();
});
alertLog.start();
