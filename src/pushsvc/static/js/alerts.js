// The alerts bar: the alert instances firing now, each linking to its topic (or group), above
// every view; hidden while none fires. It shows what the page's AlertLog knows (alert-log.js).

import { groupHash, topicHash } from "./address.js";
import { formatNumber } from "./format.js";
import { groupLabel } from "./groups.js";

export class AlertsBar {
  constructor(els, log) {
    this.els = els; // section, list, count
    this.log = log;
  }

  render() {
    const { section, list, count } = this.els;
    const items = this.log.firing().sort((a, b) =>
      `${a.alert} ${a.topic}`.localeCompare(`${b.alert} ${b.topic}`));
    section.hidden = items.length === 0;
    count.textContent = `${items.length} firing`;
    list.replaceChildren(...items.map((change) => {
      const item = document.createElement("li");
      item.dataset.alert = change.alert;
      item.dataset.topic = change.topic;
      const link = document.createElement("a");
      link.href = change.group ? groupHash(change.topic, change.group) : topicHash(change.topic);
      link.textContent = change.group ? `${change.topic} · ${groupLabel(change.group)}` : change.topic;
      const name = document.createElement("strong");
      name.textContent = change.alert;
      const value = document.createElement("span");
      value.className = "muted";
      value.textContent = ` ${formatNumber(change.value)}`;
      item.append(name, " ", link, value);
      if (change.annotations && change.annotations.summary) item.title = change.annotations.summary;
      return item;
    }));
  }
}
