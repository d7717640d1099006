// The unit detail: one unit's six gates over time as line charts, and the
// probe's input coloured by the chosen gate.

import { getJSON, withSteps } from "./data.js";
import { el, escapeHtml, fmt, shownLabel, textLabel, tick } from "./dom.js";
import { showError } from "./page.js";
import { colourOf, css, palette, scaleFor, textColourOn } from "./palette.js";
import { baseParams, currentStep, state, ui } from "./state.js";

export async function loadUnit() {
  const token = ++state.generation.unit;
  const params = {
    ...baseParams(),
    step: currentStep(),
    sequence: state.sequence,
    unit: state.unit,
  };
  try {
    const data = withSteps(await getJSON("unit", params));
    if (token !== state.generation.unit) return;
    state.unitData = { ...data, params };
    state.cursor = null;
    drawUnit();
  } catch (error) {
    if (token === state.generation.unit) showError(error);
  }
}

// Geometry of every trace chart (SVG user units, scaled to fit).
const CHART = { w: 240, h: 70, pad: 4, left: 24 };

/** The x of step `t` in a trace chart of `T` steps. */
function chartX(t, T) {
  return CHART.left + (t * (CHART.w - CHART.left - CHART.pad)) / Math.max(T - 1, 1);
}

export function drawUnit() {
  const data = state.unitData;
  if (!data) return;
  const p = data.params;
  const T = data.traces[palette.gates[0]].length;
  ui.unitPanel.dataset.run = p.run;
  ui.unitPanel.dataset.layer = p.layer;
  ui.unitPanel.dataset.unit = String(data.unit);
  ui.unitPanel.dataset.epoch = String(p.step);
  ui.unitPanel.dataset.sequence = String(p.sequence);
  ui.unitTitle.replaceChildren(
    `Unit ${data.unit} `,
    el("span", {
      class: "sub",
      text: `— every gate over the ${T} steps of probe sequence ${p.sequence}, epoch ${p.step}`,
    }),
  );
  const figures = palette.gates.map((gate) => {
    const values = data.traces[gate];
    const scale = scaleFor(gate, [values]);
    const figure = el("figure", {
      class: `trace${gate === state.gate ? " chosen" : ""}`,
      "data-gate": gate,
      "data-values": JSON.stringify(values),
      "data-mask": JSON.stringify(data.mask),
    });
    const value = el("span", { class: "value" });
    figure.append(
      el("figcaption", {}, el("span", { text: `${gate} (${palette.symbol[gate]})` }), value),
    );
    const svg = lineChart(
      values,
      data.mask,
      scale.lo,
      scale.hi,
      gate === state.gate ? "#f57c00" : "#455a64",
    );
    figure.insertAdjacentHTML("beforeend", svg);
    const chart = figure.querySelector("svg");
    chart.addEventListener("mousemove", (event) => {
      const rect = chart.getBoundingClientRect();
      const x = ((event.clientX - rect.left) / rect.width) * CHART.w;
      const t = Math.round((x - CHART.left) / (chartX(1, T) - chartX(0, T)));
      setCursor(Math.max(0, Math.min(T - 1, t)));
    });
    chart.addEventListener("mouseleave", () => setCursor(null));
    return { figure, value, values };
  });
  ui.traces.replaceChildren(...figures.map((f) => f.figure));
  ui.traceFigures = figures;
  drawUnitText();
  setCursor(state.cursor);
}

function lineChart(values, mask, lo, hi, colour) {
  const T = values.length;
  const { w, h, pad, left } = CHART;
  const x = (t) => chartX(t, T);
  const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
  let path = "";
  let pen = false;
  for (let t = 0; t < T; t++) {
    const v = values[t];
    if (v === null || !mask[t]) {
      pen = false;
      continue;
    }
    path += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(Math.max(lo, Math.min(hi, v))).toFixed(1)}`;
    pen = true;
  }
  const zero =
    lo < 0 && hi > 0
      ? `<line class="axis" x1="${left}" x2="${w - pad}" y1="${y(0)}" y2="${y(0)}" stroke-dasharray="2,2"/>`
      : "";
  const dots =
    T <= 2
      ? values
          .map((v, t) =>
            v === null ? "" : `<circle cx="${x(t)}" cy="${y(v)}" r="2" fill="${colour}"/>`,
          )
          .join("")
      : "";
  return (
    `<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">` +
    `<rect x="${left}" y="${pad}" width="${w - left - pad}" height="${h - 2 * pad}" fill="none" class="axis"/>` +
    zero +
    `<text class="tick" x="${left - 3}" y="${pad + 7}" text-anchor="end">${tick(hi)}</text>` +
    `<text class="tick" x="${left - 3}" y="${h - pad}" text-anchor="end">${tick(lo)}</text>` +
    `<path d="${path}" fill="none" stroke="${colour}" stroke-width="1.5" vector-effect="non-scaling-stroke"/>` +
    dots +
    `<line class="cursor" x1="0" x2="0" y1="${pad}" y2="${h - pad}" stroke="#212121" stroke-width="1" vector-effect="non-scaling-stroke" visibility="hidden"/>` +
    `</svg>`
  );
}

/** Marks step `t` in all six traces and the coloured text (null clears). */
export function setCursor(t) {
  state.cursor = t;
  const data = state.unitData;
  if (!ui.traceFigures || !data) return;
  for (const { figure, value, values } of ui.traceFigures) {
    const line = figure.querySelector("line.cursor");
    if (t === null) {
      line.setAttribute("visibility", "hidden");
      value.textContent = "";
    } else {
      const xt = chartX(t, values.length);
      line.setAttribute("x1", xt);
      line.setAttribute("x2", xt);
      line.setAttribute("visibility", "visible");
      value.textContent = `t=${t} ${JSON.stringify(data.labels[t])}: ${fmt(values[t], 4)}`;
    }
  }
  ui.unitText.querySelector("span.cursor")?.classList.remove("cursor");
  if (t !== null) ui.unitText.children[t]?.classList.add("cursor");
}

function drawUnitText() {
  const data = state.unitData;
  const gate = state.gate;
  const values = data.traces[gate];
  const scale = scaleFor(gate, [values]);
  // Values (the adding problem's "0.42*") get a box each; characters run on.
  const spaced = data.labels.some((s) => shownLabel(s).length > 1);
  let html = "";
  for (let t = 0; t < values.length; t++) {
    const label = data.labels[t];
    const v = values[t];
    const masked = !data.mask[t] || v === null;
    const rgb = colourOf(scale, v);
    const style = masked ? "" : `background:${css(rgb)};color:${textColourOn(rgb)}`;
    const shown = textLabel(label);
    const cls = `${spaced ? "spaced" : ""}${masked ? " masked" : ""}`;
    html +=
      `<span class="${cls}" data-t="${t}" style="${style}" ` +
      `title="step ${t}, input ${escapeHtml(JSON.stringify(label))}: ${gate} = ${fmt(v, 4)}">${escapeHtml(shown)}</span>`;
  }
  ui.unitText.innerHTML = html;
  ui.unitText.dataset.gate = gate;
  ui.unitTextTitle.textContent =
    `The input of probe sequence ${data.params.sequence}, each step coloured by unit ${data.unit}'s ` +
    `${gate} (scale ${fmt(scale.lo, 2)} … ${fmt(scale.hi, 2)}, as in Karpathy et al. 2015). ` +
    "Hover a trace to follow a step; click one to colour by that gate.";
  ui.unitText.onmousemove = (event) => {
    const t = event.target.dataset?.t;
    if (t !== undefined) setCursor(Number(t));
  };
}
