// Where a topic's alert instances fired (AlertLog.periods), on the topic view: as the x-ranges
// its charts shade (`shadedRanges`), and as a list (`renderPeriods`), the bands' text
// alternative; each item carries data-alert, data-from and data-to (topic-clock seconds;
// data-to empty while it fires).

import { groupHash } from "./address.js";
import { formatTime, isoTime } from "./format.js";
import { groupLabel } from "./groups.js";

/** The periods' union as {from, to} ranges (`to` null: still firing), oldest first: a band
 *  is one colour however many instances fired at once. */
export function shadedRanges(periods) {
  const ranges = [];
  for (const { from, to } of [...periods].sort((a, b) => a.from - b.from)) {
    const last = ranges[ranges.length - 1];
    if (last !== undefined && (last.to === null || from <= last.to)) {
      if (last.to !== null) last.to = to === null ? null : Math.max(last.to, to);
    } else {
      ranges.push({ from, to });
    }
  }
  return ranges;
}

/** Fill `section` (with its list `ul`) with one item per period; hidden when there are none. */
export function renderPeriods(section, list, periods) {
  section.hidden = periods.length === 0;
  list.replaceChildren(...periods.map((period) => {
    const item = document.createElement("li");
    item.dataset.alert = period.alert;
    item.dataset.from = String(period.from);
    item.dataset.to = period.to === null ? "" : String(period.to);
    const name = document.createElement("strong");
    name.textContent = period.alert;
    item.append(name);
    if (period.group !== null) {
      const link = document.createElement("a");
      link.href = groupHash(period.topic, period.group);
      link.textContent = groupLabel(period.group);
      item.append(" · ", link);
    }
    if (period.to === null) item.append(" firing since ", time(period.from));
    else item.append(" firing ", time(period.from), "–", time(period.to));
    return item;
  }));
}

function time(seconds) {
  const el = document.createElement("time");
  el.dateTime = isoTime(seconds);
  el.textContent = formatTime(seconds);
  return el;
}
