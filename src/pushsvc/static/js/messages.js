// A topic's messages in the topic view (the events that carry a `type` and `data`): the latest
// few, live, newest first — time, type, and the data as JSON text cut to one line, the whole
// of it on hover — and per window how many of each type it holds, with their rate (the
// updates' `windows[w].messages`, which a window carries only while it holds a message: a
// window seen counting that has none now shows none). Both are hidden for a topic without
// messages, which looks as it did. Like the tag statistics, what does not change shape is updated in place. Producer
// data reaches the page through textContent and attributes only, never as markup.

import { messageCountsOf } from "../pushsvc.js";
import { formatNumber, formatTime, isoTime } from "./format.js";

/** Characters of a message's data its row shows; its title has all the page keeps. */
export const SHOWN_CHARS = 160;

/** The windows of `windows` that count messages (those that carry `messages`, and those of
 *  `counting`, seen carrying it: without it now, they hold none), in their order:
 *  [window, [type, count][]]. */
export function messageWindows(windows, counting = new Set()) {
  const out = [];
  for (const window of Object.keys(windows)) {
    const stats = windows[window] || {};
    if (counting.has(window) || (stats.messages !== null && typeof stats.messages === "object")) {
      out.push([window, messageCountsOf(windows, window)]);
    }
  }
  return out;
}

/** A message's data as its row shows it: one line of at most SHOWN_CHARS characters. */
export function shownData(message) {
  const cut = message.text.length > SHOWN_CHARS || message.length > message.text.length;
  return cut ? `${message.text.slice(0, SHOWN_CHARS)}…` : message.text;
}

/** A message's data as its title shows it: all the page keeps, and how long it is beyond. */
export function titleData(message) {
  if (message.length === message.text.length) return message.text;
  return `${message.text}… (${formatNumber(message.length, 6)} characters in all)`;
}

export class MessagePanel {
  /** `latest`: the section of the latest messages (with a table); `counts`: the section of
   *  the counts per type. Both hidden while the topic has no messages. */
  constructor(latest, counts) {
    this.latest = latest;
    this.body = latest.querySelector("tbody");
    this.counts = counts;
    this.layout = "";
  }

  /** Draw `topic`'s (or a group's) latest messages and counts, of the chosen window or all. */
  render(topic, chosen = "") {
    this.renderLatest(topic.messages);
    this.renderCounts(topic.windows, topic.messageWindows, chosen);
  }

  renderLatest(messages) {
    this.latest.hidden = messages.length === 0;
    const have = new Map([...this.body.rows].map((row) => [row.dataset.id, row]));
    const rows = [...messages].reverse().map((message) => have.get(message.id.text) ?? row(message));
    const same = rows.length === this.body.rows.length && rows.every((r, i) => r === this.body.rows[i]);
    if (!same) this.body.replaceChildren(...rows);
  }

  renderCounts(windows, counting, chosen) {
    const shown = messageWindows(windows, counting).filter(([w]) => chosen === "" || chosen === w);
    const layout = JSON.stringify(shown.map(([w, counts]) => [w, counts.map(([type]) => type)]));
    if (layout !== this.layout) {
      this.layout = layout;
      this.counts.replaceChildren(...shown.map(([window, counts]) => countsTable(window, counts)));
    }
    this.counts.hidden = !shown.length;
    for (const [window, counts] of shown) {
      const table = this.counts.querySelector(`[data-window="${CSS.escape(window)}"]`);
      for (const [type, { count, rate }] of counts) {
        const cells = table.querySelector(`tr[data-type="${CSS.escape(type)}"]`);
        setText(cells.querySelector('[data-stat="count"]'), formatNumber(count, 6));
        setText(cells.querySelector('[data-stat="rate"]'), formatNumber(rate));
      }
    }
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** A row of the latest messages: time, type, data. */
function row(message) {
  const tr = document.createElement("tr");
  tr.dataset.id = message.id.text;
  const when = document.createElement("th");
  when.scope = "row";
  const time = document.createElement("time");
  if (message.ts !== null) {
    time.textContent = formatTime(message.ts);
    time.dateTime = isoTime(message.ts);
  }
  when.append(time);
  const type = document.createElement("td");
  type.className = "message-type";
  type.textContent = message.type;
  const data = document.createElement("td");
  data.className = "message-data";
  data.textContent = shownData(message);
  data.title = titleData(message);
  data.dataset.length = String(message.length);
  tr.append(when, type, data);
  return tr;
}

/** One window's counts: a row per type, its count and its rate per second. */
function countsTable(window, counts) {
  const table = document.createElement("table");
  table.className = "stats message-window";
  table.dataset.window = window;
  const caption = table.createCaption();
  caption.textContent = `messages, ${window} window`;
  const head = table.createTHead().insertRow();
  for (const label of ["type", "count", "per s"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    head.append(th);
  }
  const body = table.createTBody();
  if (!counts.length) {
    const none = body.insertRow();
    const cell = document.createElement("td");
    cell.colSpan = 3;
    cell.className = "muted none";
    cell.textContent = "none in this window";
    none.append(cell);
  }
  for (const [type] of counts) {
    const tr = body.insertRow();
    tr.dataset.type = type;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = type;
    tr.append(name);
    for (const stat of ["count", "rate"]) {
      const cell = document.createElement("td");
      cell.dataset.stat = stat;
      tr.append(cell);
    }
  }
  return table;
}
