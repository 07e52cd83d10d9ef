// Tag statistics in the topic view: for each window that keeps them, every `distinct_<tag>`
// as its number and a sparkline of it over the updates on screen, and every `top_<tag>` as
// a live ranked bar list (value, count; "±error" where the list comes from Space-Saving).
// Rebuilt only when the windows or statistics change; otherwise the same elements are
// updated in place, so a screen reader's place and the page's layout hold still.

import { formatNumber } from "./format.js";

const SPARK_POINTS = 120; // the newest updates a sparkline draws
const SPARK_W = 120;
const SPARK_H = 24;
const SVG = "http://www.w3.org/2000/svg";

/** The tag statistics of `windows` ({window: {stat: value}}): [window, [distinct], [top]]. */
export function tagStats(windows) {
  const out = [];
  for (const [window, stats] of Object.entries(windows)) {
    const names = Object.keys(stats || {});
    const distinct = names.filter((n) => n.startsWith("distinct_"));
    const top = names.filter((n) => n.startsWith("top_") && Array.isArray(stats[n]));
    if (distinct.length || top.length) out.push([window, distinct, top]);
  }
  return out;
}

/** The polyline points of a sparkline of `values` (nulls skipped), scaled to the box. */
export function sparkPath(values) {
  const known = values.map((v, i) => [i, v]).filter(([, v]) => typeof v === "number");
  if (!known.length) return "";
  const high = Math.max(...known.map(([, v]) => v), 1);
  const step = values.length > 1 ? SPARK_W / (values.length - 1) : 0;
  return known
    .map(([i, v]) => `${(i * step).toFixed(1)},${(SPARK_H - (v / high) * SPARK_H).toFixed(1)}`)
    .join(" ");
}

export class TagPanel {
  constructor(el) {
    this.el = el; // a <section>, hidden while the topic keeps no tag statistics
    this.layout = "";
  }

  /** Draw the latest windows of `topic` (its points give the sparklines); nothing for a
   *  topic whose events carry no tags (`untagged`: pushsvc derives it). */
  render(topic, chosen = "", untagged = false) {
    const shown = untagged ? [] : tagStats(topic.windows).filter(([w]) => chosen === "" || chosen === w);
    const layout = JSON.stringify(shown);
    if (layout !== this.layout) {
      this.layout = layout;
      this.el.replaceChildren(...shown.map(([window, distinct, top]) => build(window, distinct, top)));
    }
    this.el.hidden = !shown.length;
    const recent = topic.points.slice(-SPARK_POINTS);
    for (const [window, distinct, top] of shown) {
      const stats = topic.windows[window] || {};
      const box = this.el.querySelector(`[data-window="${CSS.escape(window)}"]`);
      for (const name of distinct) {
        const item = box.querySelector(`[data-stat="${CSS.escape(name)}"]`);
        item.querySelector(".distinct-value").textContent = formatNumber(stats[name], 6);
        const line = recent.map((p) => (p.windows[window] || {})[name] ?? null);
        item.querySelector("polyline").setAttribute("points", sparkPath(line));
      }
      for (const name of top) {
        const list = box.querySelector(`ol[data-stat="${CSS.escape(name)}"]`);
        renderBars(list, stats[name] || []);
      }
    }
  }
}

function build(window, distinct, top) {
  const box = document.createElement("div");
  box.className = "tag-window";
  box.dataset.window = window;
  const heading = document.createElement("h3");
  heading.textContent = `${window} window`;
  box.append(heading);
  for (const name of distinct) {
    const item = document.createElement("div");
    item.className = "distinct";
    item.dataset.stat = name;
    const label = document.createElement("span");
    label.className = "distinct-name";
    label.textContent = `different ${name.slice("distinct_".length)}`;
    const value = document.createElement("strong");
    value.className = "distinct-value";
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "sparkline");
    svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${name} over the recent updates`);
    svg.append(document.createElementNS(SVG, "polyline"));
    item.append(label, value, svg);
    box.append(item);
  }
  for (const name of top) {
    const caption = document.createElement("h4");
    caption.textContent = `top ${name.slice("top_".length)}`;
    const list = document.createElement("ol");
    list.className = "top-values";
    list.dataset.stat = name;
    box.append(caption, list);
  }
  return box;
}

/** One bar per entry, widest for the most frequent; rows reused as the ranking moves. */
function renderBars(list, entries) {
  const high = Math.max(1, ...entries.map((e) => e.count));
  while (list.children.length > entries.length) list.lastElementChild.remove();
  entries.forEach((entry, i) => {
    let row = list.children[i];
    if (row === undefined) {
      row = document.createElement("li");
      row.innerHTML = '<span class="top-value"></span><span class="top-bar"></span>' +
        '<span class="top-count"></span>';
      list.append(row);
    }
    row.dataset.value = entry.value;
    row.querySelector(".top-value").textContent = entry.value;
    row.querySelector(".top-bar").style.width = `${(100 * entry.count) / high}%`;
    const error = typeof entry.error === "number" ? ` ±${formatNumber(entry.error)}` : "";
    row.querySelector(".top-count").textContent = formatNumber(entry.count, 6) + error;
  });
}
