// The groups table of a grouping topic's view: one row per live group (its key's values as
// text), the topic's statistics over a chosen window, and a sparkline of a chosen statistic
// over the group's recent updates. Sorted by any column (its header's button; again for the
// other direction) and live: rows follow the stream, appear for new groups and go with
// forgotten ones. A row leads to the group's own charts (#/topics/NAME?group=...).
// Which tags, windows and statistics a topic has comes from its rule (GET rules); until the
// rules are read, or where they cannot be, from what its groups carry.

import { groupHash } from "./address.js";
import { sparkPath } from "./charts.js";
import { formatNumber } from "./format.js";
import { setText } from "./overview.js";
import { ruleFor } from "./rules.js";

const SVG = "http://www.w3.org/2000/svg";
const SPARK_WIDTH = 100; // the path's own units: the SVG stretches to its cell
const SPARK_HEIGHT = 24;
const SPARK_DEFAULT = "mean";

export class GroupsTable {
  constructor(store, els) {
    this.store = store;
    this.els = els; // section, count, windowSelect, sparkSelect, table
    this.topic = null;
    this.rows = new Map(); // group id -> {el, stats: [cell], spark: {svg, path}, version}
    this.layout = ""; // the tags and statistics the header shows
    this.columns = []; // {kind: "tag" | "stat", name}
    this.sort = null; // {kind, name, descending}; null: by the key, as the header first shows
    this.order = ""; // the rows' order as drawn
    els.windowSelect.addEventListener("change", () => this.render(true));
    els.sparkSelect.addEventListener("change", () => this.render(true));
  }

  show(topic) {
    if (this.topic !== topic) {
      this.topic = topic;
      this.rows.clear();
      this.els.table.tBodies[0].replaceChildren();
      this.layout = "";
      this.sort = null;
    }
    this.render(true);
  }

  hide() {
    this.topic = null;
    this.els.section.hidden = true;
  }

  render(force = false) {
    const topic = this.topic;
    if (topic === null) return;
    const layout = describe(topic, ruleFor(this.store.rules, topic.name));
    this.els.section.hidden = layout.tags.length === 0;
    if (this.els.section.hidden) return;
    const controls = this.syncControls(layout);
    const header = this.syncHeader(layout);
    const redraw = controls || header || force;
    const window = this.els.windowSelect.value;
    const stat = this.els.sparkSelect.value;
    for (const [id, row] of this.rows) {
      if (!topic.groups.has(id)) {
        row.el.remove();
        this.rows.delete(id);
      }
    }
    for (const group of topic.groups.values()) {
      let row = this.rows.get(group.id);
      if (row === undefined) row = this.create(group, layout);
      if (row.group !== group) {
        // Forgotten and admitted again since the last frame: a new group of the same key.
        row.group = group;
        row.version = -1;
      }
      if (redraw || row.version !== group.series.version) this.fill(row, group, window, stat);
    }
    this.arrange(window);
    const n = topic.groups.size;
    setText(this.els.count, `${n} live group${n === 1 ? "" : "s"}`);
  }

  /** The window and sparkline selectors offer the topic's windows and statistics; true when
   *  what they offer changed. */
  syncControls(layout) {
    const changed = syncOptions(this.els.windowSelect, layout.windows, layout.windows[0]);
    const preferred = layout.stats.includes(SPARK_DEFAULT) ? SPARK_DEFAULT : layout.stats[0];
    return syncOptions(this.els.sparkSelect, layout.stats, preferred) || changed;
  }

  /** One column per tag, one per statistic, then the sparkline; true when rebuilt. */
  syncHeader(layout) {
    const key = JSON.stringify([layout.tags, layout.stats]);
    const spark = this.els.sparkSelect.value;
    if (key === this.layout) {
      setText(this.sparkHeader, `${spark}, recent updates`);
      return false;
    }
    this.layout = key;
    this.columns = [
      ...layout.tags.map((name) => ({ kind: "tag", name })),
      ...layout.stats.map((name) => ({ kind: "stat", name })),
    ];
    const head = this.els.table.tHead.rows[0];
    head.replaceChildren(...this.columns.map((column) => {
      const cell = document.createElement("th");
      cell.scope = "col";
      cell.className = column.kind;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = column.name;
      const arrow = document.createElement("span");
      arrow.className = "arrow";
      arrow.setAttribute("aria-hidden", "true");
      button.append(arrow);
      button.addEventListener("click", () => this.sortBy(column));
      cell.append(button);
      column.cell = cell;
      return cell;
    }));
    this.sparkHeader = document.createElement("th");
    this.sparkHeader.scope = "col";
    this.sparkHeader.className = "spark-head";
    this.sparkHeader.textContent = `${spark}, recent updates`;
    head.append(this.sparkHeader);
    this.rows.clear();
    this.els.table.tBodies[0].replaceChildren();
    this.order = "";
    return true;
  }

  /** A header's click: sort by that column, ascending; again: the other way. */
  sortBy(column) {
    const same = this.sort && this.sort.kind === column.kind && this.sort.name === column.name;
    this.sort = { kind: column.kind, name: column.name, descending: same ? !this.sort.descending : false };
    this.render();
  }

  create(group, layout) {
    const el = document.createElement("tr");
    const href = groupHash(this.topic.name, group.key);
    layout.tags.forEach((tag, i) => {
      const value = group.key[tag] ?? null;
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) cell.scope = "row";
      cell.className = "tag";
      const text = value === null ? "(none)" : String(value);
      if (i === 0) {
        const link = document.createElement("a");
        link.href = href;
        link.textContent = text;
        // With several tags the first value alone does not tell the groups apart.
        if (layout.tags.length > 1) link.setAttribute("aria-label", groupLabel(group.key));
        cell.append(link);
      } else {
        cell.textContent = text;
      }
      if (value === null) {
        cell.classList.add("missing");
        cell.title = `events without a ${tag} tag`;
      }
      el.append(cell);
    });
    const stats = layout.stats.map((stat) => {
      const cell = document.createElement("td");
      cell.dataset.stat = stat;
      el.append(cell);
      return cell;
    });
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `-2 -2 ${SPARK_WIDTH + 4} ${SPARK_HEIGHT + 4}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(path);
    const sparkCell = document.createElement("td");
    sparkCell.className = "spark-cell";
    sparkCell.append(svg);
    el.append(sparkCell);
    // The whole row leads to the group, not only its link (unless text is being selected).
    el.addEventListener("click", (event) => {
      if (event.target.closest("a") || !document.getSelection().isCollapsed) return;
      location.hash = href;
    });
    const row = { el, group, stats, spark: { svg, path }, version: -1 };
    this.rows.set(group.id, row);
    return row;
  }

  fill(row, group, window, stat) {
    row.version = group.series.version;
    const latest = group.series.windows[window] || {};
    for (const cell of row.stats) setText(cell, formatNumber(latest[cell.dataset.stat]));
    const pairs = [];
    for (const point of group.series.points) {
      if (point.gapBefore) pairs.push([point.ts, null]);
      const stats = point.windows[window];
      pairs.push([point.ts, stats ? stats[stat] ?? null : null]);
    }
    row.spark.path.setAttribute("d", sparkPath(pairs, SPARK_WIDTH, SPARK_HEIGHT));
    const values = pairs.map(([, v]) => v).filter((v) => typeof v === "number");
    row.spark.svg.setAttribute("aria-label", values.length === 0 ? `${stat}: no values yet`
      : `${stat} over the last ${values.length} update${values.length === 1 ? "" : "s"}, ` +
        `from ${formatNumber(Math.min(...values))} to ${formatNumber(Math.max(...values))}`);
  }

  /** Rows in the chosen order (nulls last either way; ties by key), moved only when it
   *  changed; the sorted column's header says which way. */
  arrange(window) {
    const sort = this.sort || { ...this.columns[0], descending: false };
    const value = (row) => (sort.kind === "tag" ? row.group.key[sort.name] ?? null
      : (row.group.series.windows[window] || {})[sort.name] ?? null);
    const byKey = (a, b) => (a.group.id < b.group.id ? -1 : a.group.id > b.group.id ? 1 : 0);
    const rows = [...this.rows.values()].sort((a, b) => {
      const [x, y] = [value(a), value(b)];
      if (x === null || y === null) return x === y ? byKey(a, b) : x === null ? 1 : -1;
      const order = typeof x === "number" && typeof y === "number" ? x - y
        : String(x).localeCompare(String(y), undefined, { numeric: true });
      return (sort.descending ? -order : order) || byKey(a, b);
    });
    for (const column of this.columns) {
      const sorted = column.kind === sort.kind && column.name === sort.name;
      const direction = sort.descending ? "descending" : "ascending";
      if (sorted) column.cell.setAttribute("aria-sort", direction);
      else column.cell.removeAttribute("aria-sort");
      setText(column.cell.querySelector(".arrow"), sorted ? (sort.descending ? " ▼" : " ▲") : "");
    }
    const order = rows.map((row) => row.group.id).join("\n");
    if (order === this.order) return;
    this.order = order;
    this.els.table.tBodies[0].replaceChildren(...rows.map((row) => row.el));
  }
}

/** A group's key as text: `station: grill, shift: (none)`. */
export function groupLabel(key) {
  return Object.entries(key).map(([tag, value]) => `${tag}: ${value ?? "(none)"}`).join(", ");
}

/** The topic's tags, windows and statistics: its rule's, else what its groups carry. */
function describe(topic, rule) {
  if (rule !== null) {
    return { tags: rule.group_by, windows: rule.windows.map((w) => w.label), stats: rule.stats };
  }
  const first = topic.groups.values().next().value;
  if (first === undefined) return { tags: [], windows: [], stats: [] };
  const windows = Object.keys(first.series.windows);
  // The statistics of values: a window's message counts by type are no column.
  const stats = Object.keys(first.series.windows[windows[0]] || {}).filter((s) => s !== "messages");
  return { tags: Object.keys(first.key), windows, stats };
}

/** The select's options, the current choice kept where it still is one; true when changed. */
function syncOptions(select, values, preferred) {
  const have = [...select.options].map((o) => o.value);
  if (have.join("\n") === values.join("\n")) return false;
  const chosen = values.includes(select.value) ? select.value : preferred;
  select.replaceChildren(...values.map((v) => new Option(v, v)));
  select.value = chosen ?? "";
  return true;
}
