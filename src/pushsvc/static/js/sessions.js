// A session topic's own statistics in the topic view (`[[session]]` rules): for each window
// that carries them, the sessions open now, the bounce rate and events per session, and the
// funnel as bars, one per step, as wide as its share of the first step's sessions, with the
// sessions, the conversion and the median time from the first step. Rebuilt only when the
// windows or the steps change; otherwise updated in place, like the tag statistics.

import { sessionsOf } from "../pushsvc.js";
import { formatNumber } from "./format.js";

/** The windows of `windows` that carry session statistics: [window, SessionStats]. */
export function sessionWindows(windows) {
  const out = [];
  for (const window of Object.keys(windows)) {
    const stats = sessionsOf(windows, window);
    if (stats !== null) out.push([window, stats]);
  }
  return out;
}

/** A share as a percentage ("—" where undefined). */
export function percent(share) {
  return typeof share === "number" ? `${formatNumber(100 * share, 4)} %` : "—";
}

export class SessionPanel {
  constructor(el) {
    this.el = el; // a <section>, hidden for a topic that is no session topic
    this.layout = "";
  }

  /** Draw the latest windows of `topic` (the chosen one, or all). */
  render(topic, chosen = "") {
    const shown = sessionWindows(topic.windows).filter(([w]) => chosen === "" || chosen === w);
    const layout = JSON.stringify(shown.map(([w, s]) => [w, s.funnel.map((step) => step.step)]));
    if (layout !== this.layout) {
      this.layout = layout;
      this.el.replaceChildren(...shown.map(([window, stats]) => build(window, stats)));
    }
    this.el.hidden = !shown.length;
    for (const [window, stats] of shown) {
      const box = this.el.querySelector(`[data-window="${CSS.escape(window)}"]`);
      box.querySelector('[data-stat="active"]').textContent = formatNumber(stats.active, 6);
      box.querySelector('[data-stat="bounce_rate"]').textContent = percent(stats.bounce_rate);
      box.querySelector('[data-stat="events_per_session"]').textContent =
        formatNumber(stats.events_per_session, 4);
      const first = stats.funnel.length ? stats.funnel[0].sessions : 0;
      stats.funnel.forEach((step, i) => {
        const row = box.querySelectorAll(".funnel li")[i];
        row.querySelector(".funnel-bar").style.width =
          `${first ? (100 * step.sessions) / first : 0}%`;
        row.querySelector(".funnel-sessions").textContent = formatNumber(step.sessions, 6);
        row.querySelector(".funnel-conversion").textContent = percent(step.conversion);
        row.querySelector(".funnel-median").textContent =
          typeof step.median_s === "number" && i ? `${formatNumber(step.median_s, 4)} s` : "";
      });
    }
  }
}

function build(window, stats) {
  const box = document.createElement("div");
  box.className = "session-window";
  box.dataset.window = window;
  const heading = document.createElement("h3");
  heading.textContent = `sessions, ${window} window`;
  const numbers = document.createElement("dl");
  numbers.className = "session-numbers";
  for (const [stat, label] of [
    ["active", "open now"], ["bounce_rate", "bounce rate"], ["events_per_session", "events per session"],
  ]) {
    const term = document.createElement("dt");
    term.textContent = label;
    const value = document.createElement("dd");
    value.dataset.stat = stat;
    numbers.append(term, value);
  }
  box.append(heading, numbers);
  if (stats.funnel.length) {
    const list = document.createElement("ol");
    list.className = "funnel";
    list.setAttribute("aria-label", `funnel, ${window} window`);
    for (const step of stats.funnel) {
      const row = document.createElement("li");
      row.dataset.step = step.step;
      row.innerHTML = '<span class="funnel-step"></span><span class="funnel-bar"></span>' +
        '<span class="funnel-sessions"></span><span class="funnel-conversion"></span>' +
        '<span class="funnel-median"></span>';
      row.querySelector(".funnel-step").textContent = step.step; // the rule's, as text
      list.append(row);
    }
    box.append(list);
  }
  return box;
}
