// The units table: per unit of the chosen gate, its mean, saturation and
// variation over every probe sequence and, where the run logged it, the
// probe's loss change when the unit is removed; sortable by any column.

import { getJSON } from "./data.js";
import { el, fmt } from "./dom.js";
import { showError } from "./page.js";
import { isSigmoid, palette } from "./palette.js";
import { baseParams, currentStep, state, ui } from "./state.js";

/** Loads and draws the table; resolves to the answer, or null if overtaken. */
export async function loadUnits() {
  const token = ++state.generation.units;
  const params = { ...baseParams(), step: currentStep(), gate: state.gate };
  try {
    const data = await getJSON("units", params);
    if (token !== state.generation.units) return null;
    state.unitsData = { ...data, params };
    drawUnits();
    return data;
  } catch (error) {
    if (token === state.generation.units) showError(error);
    return null;
  }
}

/** The table's columns as [key, heading]; saturation only where it means
 * something, the removal only where it was logged. */
function unitColumns(gate, removal) {
  // The saturation thresholds are the ends of a sigmoid gate's range; c, g
  // and h have no such ends.
  const saturation = isSigmoid(gate)
    ? [
        ["left_saturated", `left < ${palette.leftSaturated}`],
        ["right_saturated", `right > ${palette.rightSaturated}`],
      ]
    : [];
  const removed = removal ? [["removal", "loss change when removed"]] : [];
  return [
    ["unit", "unit"],
    ["mean", "mean"],
    ...saturation,
    ["variation", "variation"],
    ...removed,
  ];
}

export function drawUnits() {
  const data = state.unitsData;
  if (!data) return;
  ui.unitsTitle.replaceChildren(
    `Units `,
    el("span", { class: "sub", text: `— ${data.gate}, epoch ${data.params.step}` }),
  );
  ui.unitsNote.textContent =
    "Over all probe sequences, unmasked steps: " +
    (isSigmoid(data.gate)
      ? `left/right = fraction of values below ${palette.leftSaturated} / ` +
        `above ${palette.rightSaturated}; `
      : "") +
    "variation = mean over sequences of the standard deviation over time" +
    (data.removal_logged
      ? "; loss change when removed = the probe's loss with the unit's h_t held at 0, " +
        "minus the intact model's (keras_lstm.ablate). "
      : ". ") +
    "Click a heading to sort, a row to open the unit.";
  fillUnitsTable(ui.unitsTable, data, drawUnits);
}

/**
 * Writes a `units` answer into `table`, sorted by the page's sort column (as
 * the unit number where the table has no such column); a click on a heading
 * changes the sort and calls `redraw`.
 */
export function fillUnitsTable(table, data, redraw) {
  const columns = unitColumns(data.gate, data.removal_logged);
  if (!columns.some(([k]) => k === state.sortKey)) {
    state.sortKey = "unit";
    state.sortDescending = false;
  }
  const key = state.sortKey;
  const sign = state.sortDescending ? -1 : 1;
  const rows = [...data.units].sort(
    (a, b) => sign * ((a[key] ?? -Infinity) - (b[key] ?? -Infinity)) || a.unit - b.unit,
  );
  const maxVariation = Math.max(1e-9, ...data.units.map((u) => u.variation ?? 0));
  const head = columns
    .map(([k, name]) => {
      const arrow = k === key ? (state.sortDescending ? " ▼" : " ▲") : "";
      return `<th data-key="${k}">${name}${arrow}</th>`;
    })
    .join("");
  const bar = (x, max = 1) =>
    `<span class="bar" style="width:${Math.round((40 * (x ?? 0)) / max)}px"></span>`;
  const cell = {
    unit: (u) => u.unit,
    mean: (u) => fmt(u.mean),
    left_saturated: (u) => bar(u.left_saturated) + fmt(u.left_saturated),
    right_saturated: (u) => bar(u.right_saturated) + fmt(u.right_saturated),
    variation: (u) => bar(u.variation, maxVariation) + fmt(u.variation),
    removal: (u) => (u.removal === null || u.removal === undefined ? "" : fmt(u.removal, 4)),
  };
  const body = rows
    .map(
      (u) =>
        `<tr data-unit="${u.unit}"${u.unit === state.unit ? ' class="chosen"' : ""}>` +
        columns.map(([k]) => `<td>${cell[k](u)}</td>`).join("") +
        "</tr>",
    )
    .join("");
  table.innerHTML = `<thead><tr>${head}</tr></thead><tbody>${body}</tbody>`;
  table.dataset.run = data.params.run;
  table.dataset.layer = data.params.layer;
  table.dataset.epoch = String(data.params.step);
  table.dataset.gate = data.gate;
  table.dataset.sortKey = key;
  table.dataset.sortDescending = String(state.sortDescending);
  table.querySelector("thead").onclick = (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    if (state.sortKey === th.dataset.key) state.sortDescending = !state.sortDescending;
    else {
      state.sortKey = th.dataset.key;
      state.sortDescending = th.dataset.key !== "unit";
    }
    redraw();
  };
}

/** Marks the chosen unit's row, scrolled into view. */
export function markChosenRow() {
  ui.unitsTable.querySelector("tr.chosen")?.classList.remove("chosen");
  const row = ui.unitsTable.querySelector(`tbody tr[data-unit="${state.unit}"]`);
  if (row) {
    row.classList.add("chosen");
    const wrap = row.closest("#units-wrap");
    const top = row.offsetTop - wrap.clientHeight / 2;
    if (
      row.offsetTop < wrap.scrollTop + 24 ||
      row.offsetTop > wrap.scrollTop + wrap.clientHeight - 24
    ) {
      wrap.scrollTop = Math.max(0, top);
    }
  }
}
