// The alerts bar: the alert instances firing now, each linking to its topic (or group), above
// every view; hidden while none fires. It shows what the page's AlertLog knows (alert-log.js):
// for each instance, the statistic its rule watches (`p90[1h]`) as it stands now, from the
// page's stream of the topic (or group) — a value kept from when it fired would say nothing
// of how things stand — and, in its title, the value it fired with. Where the page has no
// current value of it (the topic's updates cannot be read here), the value it fired with,
// said so.

import { groupHash, topicHash } from "./address.js";
import { formatNumber } from "./format.js";
import { groupLabel } from "./groups.js";
import { groupId } from "../pushsvc.js";

const WATCHED = /^\s*([A-Za-z0-9_]+)\s*\[\s*([A-Za-z0-9_.]+)\s*\]/;

/** The statistic and window a rule's `when` ("p90[1h] > 900") looks at, or null. */
export function watched(rule) {
  const match = rule && typeof rule.when === "string" ? WATCHED.exec(rule.when) : null;
  return match ? { stat: match[1], window: match[2] } : null;
}

export class AlertsBar {
  constructor(els, log, store) {
    this.els = els; // section, list, count
    this.log = log;
    this.store = store;
    this.shown = null; // what the list shows, to leave it be while nothing changed
  }

  /** The instance's statistic now, from the topic's (or its group's) latest windows. */
  current(change, what) {
    if (what === null) return null;
    const topic = this.store.topics.get(change.topic);
    if (topic === undefined) return null;
    let windows = topic.windows;
    if (change.group) {
      const group = topic.groups.get(groupId(change.group));
      if (group === undefined) return null;
      windows = group.series.windows;
    }
    const value = windows && windows[what.window] ? windows[what.window][what.stat] : null;
    return typeof value === "number" ? value : null;
  }

  render() {
    const { section, list, count } = this.els;
    const items = this.log.firing().sort((a, b) =>
      `${a.alert} ${a.topic}`.localeCompare(`${b.alert} ${b.topic}`)).map((change) => {
      const what = watched(this.log.rules.get(change.alert));
      const fired = `${formatNumber(change.value)} when it fired`;
      const now = this.current(change, what);
      const label = what === null ? null : `${what.stat}[${what.window}]`;
      return {
        change,
        text: now === null ? ` ${label ? `${label} ` : ""}${fired}` : ` ${label} ${formatNumber(now)}`,
        title: [change.annotations && change.annotations.summary, now === null ? "" : fired]
          .filter(Boolean).join("; "),
      };
    });
    const shown = JSON.stringify(items.map(({ change, text, title }) =>
      [change.alert, change.topic, change.group, text, title]));
    section.hidden = items.length === 0;
    count.textContent = `${items.length} firing`;
    if (shown === this.shown) return;
    this.shown = shown;
    list.replaceChildren(...items.map(({ change, text, title }) => {
      const item = document.createElement("li");
      item.dataset.alert = change.alert;
      item.dataset.topic = change.topic;
      item.dataset.group = change.group ? groupId(change.group) : "";
      const link = document.createElement("a");
      link.href = change.group ? groupHash(change.topic, change.group) : topicHash(change.topic);
      link.textContent = change.group ? `${change.topic} · ${groupLabel(change.group)}` : change.topic;
      const name = document.createElement("strong");
      name.textContent = change.alert;
      const value = document.createElement("span");
      value.className = "muted value";
      value.textContent = text;
      item.append(name, " ", link, value);
      if (title) item.title = title;
      return item;
    }));
  }
}
