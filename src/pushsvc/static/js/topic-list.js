// Which topics the overview shows, out of however many the page knows (a deployment with a
// channel per user holds one per signed-in user): those whose name contains the filter's
// text, in name order or newest update first, the first `limit` of them ("Show more" raises
// it a page at a time). The others keep only their entry in the store: no tile, no chart,
// no request.
//
// Shaped so that a page knowing 100,000 topics does per frame the work of the tiles it
// shows, not of the topics it knows: in name order and unfiltered, the shown names are the
// head of the store's sorted names; a filter scans the names only when it or the set of
// topics changes; newest first is sorted again at most every RESORT_MS, since every update
// moves it (and an order that moved on every frame could not be read anyway).

export const PAGE = 100; // tiles shown at first, and added by each "Show more"
export const RESORT_MS = 2_000;
export const ORDERS = { name: "by name", recent: "newest update first" };

export class TopicList {
  constructor(store) {
    this.store = store;
    this.text = ""; // the filter, lower case: names containing it match
    this.order = "name";
    this.limit = PAGE;
    this.matching = null; // the matching names in order, once worked out
    this.known = -1; // how many topics the store held when they were
    this.sortedAt = 0; // when (ms), for newest first
  }

  setFilter(text) {
    const lower = text.toLowerCase();
    if (lower === this.text) return;
    this.text = lower;
    this.limit = PAGE;
    this.matching = null;
  }

  setOrder(order) {
    if (!Object.hasOwn(ORDERS, order) || order === this.order) return;
    this.order = order;
    this.limit = PAGE;
    this.matching = null;
  }

  more() {
    this.limit += PAGE;
  }

  /** {names: the names shown, in order; matching: how many match the filter; total: how many
   *  topics the page knows; wait: ms until newest first is due to be sorted again (null
   *  when nothing waits)}. */
  shown(now = Date.now()) {
    const { names } = this.store;
    const total = names.length;
    if (this.order === "name" && this.text === "") {
      return { names: names.slice(0, this.limit), matching: total, total, wait: null };
    }
    let wait = null;
    if (this.matching === null || this.known !== total) {
      const since = now - this.sortedAt;
      if (this.matching === null || this.order === "name" || since >= RESORT_MS) this.work(now);
      else wait = RESORT_MS - since;
    } else if (this.order === "recent") {
      // The same topics, their updates moving them: sorted again when due.
      const since = now - this.sortedAt;
      if (since >= RESORT_MS) this.work(now);
      else wait = RESORT_MS - since;
    }
    return { names: this.matching.slice(0, this.limit), matching: this.matching.length, total, wait };
  }

  work(now) {
    const { names, topics } = this.store;
    const text = this.text;
    const kept = text === "" ? names.slice() : names.filter((name) => name.toLowerCase().includes(text));
    if (this.order === "recent") {
      const ts = (name) => topics.get(name).ts ?? -Infinity;
      // Stable: topics of one clock (or none yet) stay in name order.
      kept.sort((a, b) => {
        const [x, y] = [ts(a), ts(b)];
        return x === y ? 0 : x > y ? -1 : 1;
      });
    }
    this.matching = kept;
    this.known = names.length;
    this.sortedAt = now;
  }
}
