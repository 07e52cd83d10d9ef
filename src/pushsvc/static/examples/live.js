// pushsvc.js in use: the topic the address names (?topic=orders, a pattern like sensors.*
// too; `pushsvc demo`'s shop.pageviews by default), its last five minutes first (or ?since=
// an update id or a time), then live, each update once; ?window=5m: the mean shown.
import { subscribe } from "../pushsvc.js";

const address = new URLSearchParams(location.search);
const topic = address.get("topic") || "shop.pageviews";
const windowLabel = address.get("window") || "1m";
const SHOWN = 100; // newest updates listed
const $ = (id) => document.getElementById(id);
const digits = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 6 });
const number = (x) => (typeof x === "number" ? digits.format(x) : "—");
let count = 0;

$("topic").textContent = topic;
$("window").textContent = windowLabel;
subscribe({
  topics: [topic],
  history: { since: address.get("since") ?? new Date(Date.now() - 5 * 60_000) },
  onUpdate(update) {
    $("count").textContent = String(++count);
    if (update.event) $("value").textContent = number(update.event.value);
    $("mean").textContent = number(update.windows[windowLabel]?.mean);
    const item = document.createElement("li");
    item.dataset.id = update.id;
    const what = update.event ? number(update.event.value) : "tick";
    item.textContent = `${update.topic} ${update.id}: ${what}`;
    $("received").prepend(item);
    if ($("received").children.length > SHOWN) $("received").lastElementChild.remove();
  },
  onGap() { $("gap").hidden = false; },
  onStatus(state) { $("state").textContent = $("state").dataset.state = state; },
});
