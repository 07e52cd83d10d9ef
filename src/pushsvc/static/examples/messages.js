// pushsvc.js's messages() in use: the messages of the topic the address names (?topic=orders,
// a pattern like chat.* too), of the types it names (?types=shipped,cancelled; `message`
// always), newest first; ?replay=10 starts with the last ten. Reloading the page resumes
// after the last message it showed (its id kept in sessionStorage): nothing twice, nothing
// missed, or a note that something was.
import { messages } from "../pushsvc.js";

const address = new URLSearchParams(location.search);
const topic = address.get("topic") || "orders";
const types = (address.get("types") || "").split(",").filter(Boolean);
const replay = address.get("replay");
const SHOWN = 100; // newest messages listed
const KEPT = `pushsvc-messages-${topic}`; // where the last id is kept across reloads
const $ = (id) => document.getElementById(id);

$("topic").textContent = topic;
const feed = messages({
  topics: [topic],
  types,
  replay: replay === null ? undefined : Number(replay),
  lastEventId: sessionStorage.getItem(KEPT) ?? undefined,
  onMessage(message) {
    const item = document.createElement("li");
    item.dataset.id = message.id;
    item.dataset.type = message.type;
    item.textContent = `${message.type}: ${JSON.stringify(message.data)}`; // as text, never markup
    $("received").prepend(item);
    if ($("received").children.length > SHOWN) $("received").lastElementChild.remove();
    sessionStorage.setItem(KEPT, message.id);
  },
  onGap() {
    $("gap").hidden = false;
    sessionStorage.setItem(KEPT, feed.lastEventId); // resume after the gap, not before it
  },
  onStatus(state) { $("state").textContent = $("state").dataset.state = state; },
});
$("types").textContent = feed.types.join(", ");
