// pushsvc dashboard: the overview of every topic, and a topic view at #/topics/NAME.
// One EventSource for all topics (browsers allow ~6 HTTP/1.1 connections per host).

import { Connection, loadHistory } from "./connection.js";
import { formatTime } from "./format.js";
import { Overview } from "./overview.js";
import { MAX_POINTS, Store } from "./store.js";
import { TopicView } from "./topic.js";

const OVERVIEW_HISTORY = 120; // updates loaded per topic for the overview's small charts
const TOPIC_HISTORY = MAX_POINTS; // for a topic view

const $ = (id) => document.getElementById(id);
const store = new Store();
const overview = new Overview(store, {
  section: $("overview"), grid: $("tiles"), filter: $("filter"), shown: $("shown"),
  empty: $("empty"), template: $("tile-template"),
}, (shownNames) => connection.loadHistories(shownNames));
const topicView = new TopicView({
  section: $("topic-view"), title: $("topic-title"), windowSelect: $("window-select"),
  pause: $("pause"), figures: $("figures"), current: $("current"), value: $("topic-value"),
  rate: $("topic-rate"), time: $("topic-time"), template: $("figure-template"),
});

let queued = false;
function changed() {
  if (queued) return;
  queued = true;
  // One render per frame however many updates arrive, and none while the tab is hidden.
  requestAnimationFrame(() => {
    queued = false;
    if (route() === null) overview.render();
    else topicView.render();
  });
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
  if (state === "gap") {
    const note = $("resynced");
    note.textContent = `Resynced at ${formatTime(Date.now() / 1000)}: updates were missed ` +
      "while disconnected; the numbers are the server's current state, charts have a break.";
    note.hidden = false;
  }
}

const connection = new Connection(store, {
  status: setStatus,
  changed,
  update(update) {
    if (store.topic(update.topic).add(update)) changed();
  },
  snapshot(snapshot) {
    const current = snapshot.topics || {};
    for (const [name, entry] of Object.entries(current)) store.topic(name).snapshot(entry, snapshot.gap);
    // A snapshot is the server's whole state for `*`: anything else is gone (a restart).
    for (const topic of store.topics.values()) {
      // hasOwn, not `in`: a topic may well be called "constructor".
      if (!Object.hasOwn(current, topic.name)) topic.markStale();
    }
    changed();
  },
}, (name) => (route() === name ? TOPIC_HISTORY : OVERVIEW_HISTORY));

/** The topic of the view the address names, or null for the overview. */
function route() {
  const match = /^#\/topics\/(.+)$/.exec(location.hash);
  if (!match) return null;
  try { return decodeURIComponent(match[1]); } catch (_error) { return null; }
}

async function navigate() {
  const name = route();
  $("overview").hidden = name !== null;
  $("topic-view").hidden = name === null;
  if (name === null) {
    topicView.hide();
    document.title = "pushsvc — live topics";
    overview.render(true);
    return;
  }
  document.title = `${name} — pushsvc`;
  const topic = store.topic(name);
  topicView.show(topic);
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
