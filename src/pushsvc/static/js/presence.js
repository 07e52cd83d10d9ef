// "N watching" on each tile shown: the streams watching its topic now, over every web process
// (GET /topics/{topic}/presence). This page's own stream (`*`) watches every topic: it is one
// of them. Read every few seconds for the tiles the filter shows (the first MAX_TILES of
// them), one request per topic, never two at once for one; a refused or failed read leaves the
// line hidden.

const REFRESH_MS = 5_000;
const MAX_TILES = 100;

export class PresenceBadges {
  constructor(overview) {
    this.overview = overview;
    this.loading = new Set();
    this.seen = new Set(); // topics read at least once
    this.timer = null;
  }

  /** Read the tiles shown that were never read (a tile just made): called after a render. */
  fresh() {
    for (const [name, tile] of this.overview.tiles) {
      if (!tile.el.hidden && !this.seen.has(name) && !this.loading.has(name)) this.load(name, tile);
    }
  }

  start() {
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  refresh() {
    if (document.hidden) return;
    let asked = 0;
    for (const [name, tile] of this.overview.tiles) {
      if (tile.el.hidden || this.loading.has(name)) continue;
      if (++asked > MAX_TILES) break;
      this.load(name, tile);
    }
  }

  /** Read one topic's presence now (also when its tile first appears). */
  load(name, tile) {
    this.loading.add(name);
    this.seen.add(name);
    const line = tile.el.querySelector(".watching");
    fetch(`topics/${encodeURIComponent(name)}/presence`)
      .then((response) => (response.ok ? response.json() : null))
      .then((answer) => {
        if (answer === null || typeof answer.watching !== "number") {
          line.hidden = true;
          return;
        }
        line.textContent = watchingText(answer.watching);
        line.dataset.watching = String(answer.watching);
        line.title = answer.subs && answer.subs.length ? answer.subs.join(", ") : "";
        line.hidden = false;
      })
      .catch(() => { line.hidden = true; })
      .finally(() => this.loading.delete(name));
  }
}

export function watchingText(count) {
  return `${count} watching`;
}
