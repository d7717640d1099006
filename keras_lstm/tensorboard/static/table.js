// The units table: per unit of the chosen gate, its mean, saturation and
// variation over every probe sequence; sortable by any column.

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

/** The table's columns as [key, heading]; saturation only where it means something. */
function unitColumns(gate) {
  // The saturation thresholds are the ends of a sigmoid gate's range; c, g
  // and h have no such ends.
  const saturation = isSigmoid(gate)
    ? [
        ["left_saturated", `left < ${palette.leftSaturated}`],
        ["right_saturated", `right > ${palette.rightSaturated}`],
      ]
    : [];
  return [["unit", "unit"], ["mean", "mean"], ...saturation, ["variation", "variation"]];
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
    "variation = mean over sequences of the standard deviation over time. " +
    "Click a heading to sort, a row to open the unit.";
  const columns = unitColumns(data.gate);
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
  };
  const body = rows
    .map(
      (u) =>
        `<tr data-unit="${u.unit}"${u.unit === state.unit ? ' class="chosen"' : ""}>` +
        columns.map(([k]) => `<td>${cell[k](u)}</td>`).join("") +
        "</tr>",
    )
    .join("");
  ui.unitsTable.innerHTML = `<thead><tr>${head}</tr></thead><tbody>${body}</tbody>`;
  ui.unitsTable.dataset.layer = data.params.layer;
  ui.unitsTable.dataset.epoch = String(data.params.step);
  ui.unitsTable.dataset.gate = data.gate;
  ui.unitsTable.dataset.sortKey = key;
  ui.unitsTable.dataset.sortDescending = String(state.sortDescending);
  ui.unitsTable.querySelector("thead").onclick = (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    if (state.sortKey === th.dataset.key) state.sortDescending = !state.sortDescending;
    else {
      state.sortKey = th.dataset.key;
      state.sortDescending = th.dataset.key !== "unit";
    }
    drawUnits();
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
