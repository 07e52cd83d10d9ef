// "N watching" on each tile shown: the streams watching its topic now, over every web process
// (GET /topics/{topic}/presence). This page's own stream (`*`) watches every topic: it is one
// of them. Read every few seconds for the tiles on screen (the first MAX_TILES of them: the
// overview's tiles below the fold ask for nothing), one request per topic, never two at once
// for one; a refused or failed read leaves the line hidden.

const REFRESH_MS = 5_000;
const MAX_TILES = 100;

export class PresenceBadges {
  constructor(overview) {
    this.overview = overview;
    this.loading = new Set();
    this.seen = new WeakSet(); // tiles read at least once (a tile made again is new)
    this.timer = null;
  }

  /** Read the tiles on screen that were never read (a tile just made or scrolled to):
   *  called after a render and when tiles come on screen. */
  fresh() {
    for (const [name, tile] of this.overview.tiles) {
      if (tile.onScreen && !this.seen.has(tile) && !this.loading.has(name)) this.load(name, tile);
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
      if (!tile.onScreen || this.loading.has(name)) continue;
      if (++asked > MAX_TILES) break;
      this.load(name, tile);
    }
  }

  /** Read one topic's presence now (also when its tile first appears). */
  load(name, tile) {
    this.loading.add(name);
    this.seen.add(tile);
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
