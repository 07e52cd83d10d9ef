// The alerts bar: the alert instances firing now, each linking to its topic (or group), above
// every view. It reads GET /alerts once its own stream of `_alerts` is open (so no change
// falls between the two), then follows the stream: a firing change adds an instance, a
// resolved one removes it. With auth on, both answer only the instances of topics the page's
// token may read.

import { groupHash, topicHash } from "./address.js";
import { formatNumber } from "./format.js";
import { groupLabel } from "./groups.js";

export class AlertsBar {
  constructor(els) {
    this.els = els; // section, list, count
    this.firing = new Map(); // instance key -> change
    this.source = null;
  }

  /** Only where the server has alert rules (GET rules): elsewhere there is nothing to show. */
  async start() {
    try {
      const response = await fetch("rules");
      const rules = response.ok ? await response.json() : {};
      if (!rules.alerts || rules.alerts.length === 0) return;
    } catch (_error) {
      return;
    }
    this.source = new EventSource("topics/_alerts/stream");
    let loaded = false;
    this.source.addEventListener("snapshot", () => {
      if (loaded) return;
      loaded = true;
      fetch("alerts")
        .then((response) => (response.ok ? response.json() : { alerts: [] }))
        .then((answer) => {
          for (const change of answer.alerts) this.apply(change);
          this.render();
        })
        .catch(() => {});
    });
    this.source.addEventListener("alert", (event) => {
      this.apply(JSON.parse(event.data));
      this.render();
    });
  }

  apply(change) {
    const key = JSON.stringify([change.alert, change.topic, change.group]);
    if (change.state === "firing") this.firing.set(key, change);
    else if (change.state === "resolved") this.firing.delete(key);
  }

  render() {
    const { section, list, count } = this.els;
    const items = [...this.firing.values()].sort((a, b) =>
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
