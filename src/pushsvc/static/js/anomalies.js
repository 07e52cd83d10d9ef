// The overview's anomaly ranking: GET /anomalies over the last day (Netdata's Anomaly Advisor),
// the series (topics and groups) with anomalous buckets, highest anomaly rate first, each a
// link to its view. Fetched on open and every minute; hidden while nothing is anomalous (and
// when the server keeps no scored series). The day ends at the newest topic clock the page
// knows, not the browser's: a producer whose clock is behind, or a backfill, has its
// anomalies hours or days back, and a day of the browser's clock would show none of them.
// Producer text reaches the page through textContent and attributes only.

import { fetchJson } from "../pushsvc.js";
import { groupHash, topicHash } from "./address.js";
import { groupLabel } from "./groups.js";

const DAY_S = 86400;
const REFRESH_MS = 60_000;
const SHOWN = 10;

export class AnomalyRanking {
  /** `clock()`: the newest topic clock the page knows (epoch seconds), or null. */
  constructor(els, clock) {
    this.els = els; // section, list
    this.clock = clock;
    this.timer = null;
    this.awaitingClock = false;
  }

  /** Called as updates arrive: the first fetch waits for a topic clock. */
  clockMoved() {
    if (this.awaitingClock && this.clock() !== null) this.refresh();
  }

  start() {
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  async refresh() {
    const clock = this.clock();
    this.awaitingClock = clock === null;
    if (clock === null) return; // no update yet: asked for once one sets a topic clock
    let answer;
    try {
      const since = Math.floor(clock) - DAY_S;
      answer = await fetchJson(`anomalies?since=${since}&limit=${SHOWN}`);
    } catch (_error) {
      return; // a server without the route, or one away for a moment: keep what is shown
    }
    this.render(answer.anomalies.filter((entry) => entry.anomalous > 0));
  }

  render(entries) {
    const { section, list } = this.els;
    section.hidden = entries.length === 0;
    list.replaceChildren(...entries.map((entry) => {
      const item = document.createElement("li");
      item.dataset.rate = String(entry.rate);
      const link = document.createElement("a");
      link.href = entry.group ? groupHash(entry.topic, entry.group) : topicHash(entry.topic);
      link.textContent = entry.topic;
      item.append(link);
      if (entry.group) item.append(` ${groupLabel(entry.group)}`);
      const percent = (100 * entry.rate).toFixed(entry.rate < 0.1 ? 2 : 1);
      item.append(` · ${percent} % of ${entry.scored} ${entry.resolution} buckets anomalous ` +
        `(${entry.anomalous}, ${entry.stat})`);
      return item;
    }));
  }
}
