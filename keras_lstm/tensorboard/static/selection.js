// Hypotheses (keras_lstm/hypotheses.py, LSTMVis's rule): drag over a range
// of steps on the heatmap, and the plugin lists the units that are on
// throughout it (`select`); then where else those units are on together, in
// every probe sequence (`matches`), each with its inputs and a few steps
// around them. The rules come back in words, shown beside their results, and
// the Python call that removes the selected units to test the hypothesis.

import { getJSON } from "./data.js";
import { el, fmt, shownLabel } from "./dom.js";
import { showError } from "./page.js";
import { palette } from "./palette.js";
import { baseParams, currentStep, state, ui } from "./state.js";

// What the page does when the hypothesis asks for it (index.js).
const actions = { redraw: () => {}, chooseUnit: () => {}, openMatch: () => {} };

/** Sets what a click in the lists does: `chooseUnit(unit)`,
 * `openMatch(match)`, and `redraw()` of the heatmap. */
export function onSelection(given) {
  Object.assign(actions, given);
}

/** The panel: the rule's options, the selected units, the matches. */
export function buildSelection() {
  ui.ruleGate = el("select", { id: "rule-gate", "aria-label": "gate of the rule" });
  for (const gate of palette.gates) ui.ruleGate.append(el("option", { value: gate, text: gate }));
  ui.ruleGate.value = state.rule.gate;
  ui.threshold = el("input", {
    id: "rule-threshold",
    type: "number",
    step: "0.05",
    value: String(state.rule.threshold),
  });
  ui.offAround = el("input", { id: "rule-off-around", type: "checkbox" });
  ui.minLength = el("input", { id: "rule-min-length", type: "number", min: "1", value: "1" });
  ui.minOn = el("input", { id: "rule-min-on", type: "number", min: "1", placeholder: "all" });
  ui.onlySelected = el("input", { id: "only-selected", type: "checkbox" });
  ui.clearSelection = el("button", { id: "clear-selection", type: "button", text: "Clear" });
  const options = el(
    "div",
    { class: "rule-options" },
    el("label", {}, "On: ", ui.ruleGate),
    el("label", {}, "≥", ui.threshold),
    el("label", {}, ui.offAround, "off before and after"),
    el("label", {}, "matches of ≥", ui.minLength, "steps"),
    el("label", {}, "with ≥", ui.minOn, "units on"),
    el("label", {}, ui.onlySelected, "show only these units in the heatmap"),
    ui.clearSelection,
  );
  ui.selectionRule = el("p", { class: "rule", id: "selection-rule" });
  ui.selectedUnits = el("div", { id: "selected-units" });
  ui.ablateCode = el("code", { id: "ablate-code" });
  ui.copyAblate = el("button", { type: "button", id: "copy-ablate", text: "Copy" });
  ui.removeUnits = el("button", { type: "button", id: "remove-units", text: "Remove them here" });
  ui.removal = el("p", { class: "note", id: "removal-result" });
  ui.ablate = el(
    "div",
    { id: "ablate" },
    el("span", { class: "note", text: "Remove them and measure: " }),
    ui.ablateCode,
    ui.copyAblate,
    ui.removeUnits,
    ui.removal,
  );
  ui.ablate.hidden = true;
  ui.matchesRule = el("p", { class: "rule", id: "matches-rule" });
  ui.matches = el("ol", { id: "matches" });
  ui.selectionPanel = el(
    "section",
    { class: "wide", id: "selection-panel" },
    el("h2", {}, "Hypothesis ", el("span", { class: "sub", text: "(LSTMVis, Strobelt et al. 2018)" })),
    options,
    el("div", { class: "hypothesis" },
      el("div", { id: "selection-result" },
        el("h3", { text: "Units on over the selected steps" }),
        ui.selectionRule,
        ui.selectedUnits,
        ui.ablate,
      ),
      el("div", { id: "matches-result" },
        el("h3", { text: "Where they are on together" }),
        ui.matchesRule,
        ui.matches,
      ),
    ),
  );  // prettier-ignore
  wireSelection();
  showNothingSelected();
  return ui.selectionPanel;
}

function wireSelection() {
  const rerun = () => {
    readRule();
    loadSelection();
  };
  ui.ruleGate.addEventListener("change", rerun);
  ui.threshold.addEventListener("change", rerun);
  ui.offAround.addEventListener("change", rerun);
  ui.minLength.addEventListener("change", () => {
    readRule();
    loadMatches();
  });
  ui.minOn.addEventListener("change", () => {
    readRule();
    loadMatches();
  });
  ui.onlySelected.addEventListener("change", () => {
    state.onlySelected = ui.onlySelected.checked;
    actions.redraw();
  });
  ui.clearSelection.addEventListener("click", () => clearSelection());
  ui.selectedUnits.addEventListener("click", (event) => {
    const chip = event.target.closest("[data-unit]");
    if (chip) actions.chooseUnit(Number(chip.dataset.unit));
  });
  ui.matches.addEventListener("click", (event) => {
    const item = event.target.closest("li[data-sequence]");
    if (!item) return;
    for (const other of ui.matches.querySelectorAll("li.open")) other.classList.remove("open");
    item.classList.add("open");
    actions.openMatch({
      sequence: Number(item.dataset.sequence),
      start: Number(item.dataset.start),
      stop: Number(item.dataset.stop),
    });
  });
  ui.copyAblate.addEventListener("click", copyAblate);
  ui.removeUnits.addEventListener("click", removeSelected);
}

function readRule() {
  const threshold = Number(ui.threshold.value);
  state.rule = {
    gate: ui.ruleGate.value,
    threshold: Number.isFinite(threshold) && ui.threshold.value !== "" ? threshold : 0.3,
    offAround: ui.offAround.checked,
    minLength: Math.max(1, Math.floor(Number(ui.minLength.value) || 1)),
    minOn: ui.minOn.value === "" ? null : Math.max(1, Math.floor(Number(ui.minOn.value))),
  };
}

/** Selects steps `start..stop` of the shown sequence (in either order). */
export function selectSteps(a, b) {
  state.selection = { sequence: state.sequence, start: Math.min(a, b), stop: Math.max(a, b) };
  state.span = null;
  readRule();
  loadSelection();
}

/** Forgets the hypothesis (a new run or layer has other units). */
export function clearSelection() {
  state.selection = null;
  state.selected = null;
  state.span = null;
  ++state.generation.select;
  ++state.generation.matches;
  showNothingSelected();
  actions.redraw();
}

function showNothingSelected() {
  ui.selectionRule.textContent =
    "Drag over steps of the heatmap (or shift-click one) to list the units that are on " +
    "throughout them.";
  ui.selectedUnits.replaceChildren();
  ui.selectedUnits.dataset.units = "";
  ui.ablate.hidden = true;
  ui.matchesRule.textContent = "";
  ui.matches.replaceChildren();
  ui.matches.dataset.matches = "";
  ui.selectionPanel.dataset.state = "empty";
}

/** Applies the rule to the selected steps at the shown epoch. */
export async function loadSelection() {
  const selection = state.selection;
  if (!selection) return;
  const token = ++state.generation.select;
  const params = {
    ...baseParams(),
    step: currentStep(),
    gate: state.rule.gate,
    sequence: selection.sequence,
    start: selection.start,
    stop: selection.stop,
    threshold: state.rule.threshold,
    off_around: state.rule.offAround,
  };
  ui.selectionPanel.dataset.state = "loading";
  try {
    const data = await getJSON("select", params);
    if (token !== state.generation.select) return;
    state.selected = { ...data, params };
    drawSelection();
    actions.redraw();
    await loadMatches();
  } catch (error) {
    if (token === state.generation.select) showError(error);
  }
}

function drawSelection() {
  const data = state.selected;
  const p = data.params;
  ui.selectionRule.textContent = `${data.rule} Probe sequence ${p.sequence}, epoch ${p.step}.`;
  const chips = data.units.map((u) =>
    el(
      "button",
      {
        type: "button",
        class: `unit-chip${u.unit === state.unit ? " chosen" : ""}`,
        "data-unit": String(u.unit),
        title: `unit ${u.unit}: lowest ${fmt(u.min, 4)}, mean ${fmt(u.mean, 4)} over steps ${p.start}–${p.stop}`,
      },
      el("b", { text: String(u.unit) }),
      el("span", { text: ` ≥ ${fmt(u.min, 2)}` }),
    ),
  );
  if (!chips.length) chips.push(el("span", { class: "note", text: "No unit matches this rule." }));
  ui.selectedUnits.replaceChildren(...chips);
  ui.selectedUnits.dataset.units = data.units.map((u) => u.unit).join(" ");
  ui.selectedUnits.dataset.epoch = String(p.step);
  ui.selectedUnits.dataset.key = JSON.stringify([
    p.gate,
    p.sequence,
    p.start,
    p.stop,
    p.threshold,
    p.off_around,
  ]);
  const units = data.units.map((u) => u.unit);
  ui.ablate.hidden = !units.length;
  ui.removal.textContent = "";
  delete ui.removal.dataset.metrics;
  ui.ablateCode.textContent =
    `keras_lstm.ablate(model, x, y, ${JSON.stringify(p.layer)}, ` +
    `[${units.join(", ")}], state="hidden")`;
}

/** Where the selected units are on together, over every sequence. */
export async function loadMatches() {
  const token = ++state.generation.matches;
  const selected = state.selected;
  const units = selected?.units.map((u) => u.unit) ?? [];
  if (!units.length) {
    ui.matchesRule.textContent = selected ? "No units, no matches." : "";
    ui.matches.replaceChildren();
    ui.matches.dataset.matches = "[]";
    ui.selectionPanel.dataset.state = "done";
    return;
  }
  const p = selected.params;
  const params = {
    run: p.run,
    layer: p.layer,
    step: p.step,
    gate: p.gate,
    units: units.join(","),
    threshold: p.threshold,
    min_length: state.rule.minLength,
  };
  if (state.rule.minOn !== null) params.min_on = Math.min(state.rule.minOn, units.length);
  try {
    const data = await getJSON("matches", params);
    if (token !== state.generation.matches) return;
    drawMatches(data);
    ui.selectionPanel.dataset.state = "done";
  } catch (error) {
    if (token === state.generation.matches) showError(error);
  }
}

function drawMatches(data) {
  const shown = data.matches.length < data.total ? `; the best ${data.matches.length} shown` : "";
  ui.matchesRule.textContent = `${data.rule} ${data.total} match${data.total === 1 ? "" : "es"}${shown}.`;
  const items = data.matches.map((m) => {
    const text = el("span", { class: "match-text" });
    m.labels.forEach((label, k) => {
      const t = m.from + k;
      const inside = t >= m.start && t <= m.stop;
      text.append(
        el("span", {
          class: inside ? "in" : "around",
          "data-t": String(t),
          text: shownLabel(label),
          title: `step ${t}`,
        }),
      );
    });
    const steps = m.start === m.stop ? `step ${m.start}` : `steps ${m.start}–${m.stop}`;
    return el(
      "li",
      {
        "data-sequence": String(m.sequence),
        "data-start": String(m.start),
        "data-stop": String(m.stop),
        title: `${m.on_steps} on unit-steps, ${fmt(m.mean_on, 2)} units on per step`,
      },
      el("span", { class: "where", text: `seq ${m.sequence} · ${steps}` }),
      m.from > 0 ? el("span", { class: "around", text: "…" }) : "",
      text,
      el("span", { class: "on", text: `${m.on_steps} on` }),
    );
  });
  ui.matches.replaceChildren(...items);
  ui.matches.dataset.matches = JSON.stringify(
    data.matches.map((m) => [m.sequence, m.start, m.stop]),
  );
  ui.matches.dataset.total = String(data.total);
}

/** The probe's loss with the selected units removed, at this epoch: the model
 * and probe the run logged with its targets, evaluated by the plugin. */
async function removeSelected() {
  const units = state.selected?.units.map((u) => u.unit) ?? [];
  if (!units.length) return;
  const params = { ...baseParams(), step: currentStep(), units: units.join(","), state: "hidden" };
  ui.removal.textContent = "Removing…";
  try {
    const data = await getJSON("remove", params);
    const m = data.metrics;
    const parts = [
      `loss ${fmt(m.intact_loss)} → ${fmt(m.loss)} (${m.loss_change >= 0 ? "+" : ""}${fmt(m.loss_change)})`,
    ];
    for (const [name, value] of Object.entries(m)) {
      if (name.startsWith("intact_") && name !== "intact_loss") {
        const metric = name.slice("intact_".length);
        parts.push(`${metric} ${fmt(value)} → ${fmt(m[metric])}`);
      }
    }
    ui.removal.textContent =
      `Epoch ${data.step}, ${data.sequences} probe sequences, ${units.length} units' h_t held at 0: ` +
      parts.join("; ");
    ui.removal.dataset.metrics = JSON.stringify(m);
  } catch (error) {
    ui.removal.textContent = String(error.message || error);
  }
}

async function copyAblate() {
  const text = ui.ablateCode.textContent;
  try {
    await navigator.clipboard.writeText(text);
    ui.copyAblate.textContent = "Copied";
  } catch {
    // Without clipboard access (an iframe may have none): select it to copy.
    const range = document.createRange();
    range.selectNodeContents(ui.ablateCode);
    const chosen = window.getSelection();
    chosen.removeAllRanges();
    chosen.addRange(range);
    ui.copyAblate.textContent = "Selected: Ctrl+C";
  }
  setTimeout(() => {
    ui.copyAblate.textContent = "Copy";
  }, 1500);
}

/** Marks the chosen unit among the selected ones. */
export function markChosenChip() {
  for (const chip of ui.selectedUnits.querySelectorAll(".unit-chip")) {
    chip.classList.toggle("chosen", Number(chip.dataset.unit) === state.unit);
  }
}
