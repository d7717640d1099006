// Annotation tracks under the heatmap: per step of the shown sequence, what
// the model was asked for and what it answered (`target`, `prediction`, text)
// and what that cost (`p(target)`, `loss`, numbers coloured by value), one
// row each, aligned with the heatmap's columns. A track logged once per
// sequence shows its value at the sequence's last real step.

import { getJSON } from "./data.js";
import { el, fmt, shownLabel, truncate } from "./dom.js";
import { colourOf, css, textColourOn } from "./palette.js";
import { currentStep, state, ui } from "./state.js";

/** Loads the shown sequence's tracks (none where the run logged none). */
export async function loadTracks() {
  const token = ++state.generation.tracks;
  const params = { run: state.run, step: currentStep(), sequence: state.sequence };
  try {
    const data = await getJSON("tracks", params);
    if (token !== state.generation.tracks) return;
    state.tracks = { ...data, params };
  } catch (error) {
    // The heatmap is still worth showing: say why the tracks are missing.
    if (token !== state.generation.tracks) return;
    console.error(error);
    state.tracks = { tracks: [], params, error: String(error.message || error) };
  }
  drawTracks();
}

/** The colour scale of a number track: [0, 1] for values that lie there
 * (probabilities), else from the smaller of 0 and its least value to its
 * largest, over every sequence at this step. */
function trackScale(track) {
  const [lo, hi] = track.range ?? [0, 1];
  if (lo >= 0 && hi <= 1) return { kind: "sequential", lo: 0, hi: 1 };
  const low = Math.min(0, lo);
  return { kind: "sequential", lo: low, hi: hi > low ? hi : low + 1 };
}

/** The rows, drawn to the heatmap's geometry; nothing while the heatmap and
 * the tracks show different sequences. */
export function drawTracks() {
  const data = state.tracks;
  const heatmap = state.heatmap;
  const box = ui.tracks;
  if (!box) return;
  const same =
    data &&
    heatmap &&
    data.params.run === heatmap.params.run &&
    data.params.step === heatmap.params.step &&
    data.params.sequence === heatmap.params.sequence;
  if (!same || !data.tracks.length) {
    box.replaceChildren();
    box.hidden = true;
    box.dataset.sequence = "";
    if (data?.error) ui.tracksNote.textContent = `No tracks: ${data.error}`;
    return;
  }
  const g = state.heatmapGeometry;
  const T = g.T;
  // The last step the layer read: where a per-sequence value is shown.
  let last = T - 1;
  while (last > 0 && !heatmap.mask[last]) last--;
  const rows = data.tracks.map((track) => {
    const values =
      track.per === "step" ? track.values : Array.from({ length: T }, () => undefined);
    if (track.per === "sequence") values[last] = track.values;
    const scale = track.kind === "number" ? trackScale(track) : null;
    const cells = [];
    for (let t = 0; t < T; t++) {
      const v = values[t];
      const cell = el("span", { class: "track-cell", "data-t": String(t) });
      cell.style.width = `${g.cellW}px`;
      if (v !== undefined) {
        cell.dataset.value = JSON.stringify(v);
        if (scale) {
          const rgb = colourOf(scale, v);
          cell.style.background = css(rgb);
          cell.style.color = textColourOn(rgb);
        } else {
          cell.textContent = g.cellW >= 7 ? truncate(shownLabel(String(v)), Math.floor(g.cellW / 7)) : "";
          cell.classList.add("text");
        }
        if (v === null) cell.classList.add("missing");
      }
      cells.push(cell);
    }
    const row = el(
      "div",
      { class: "track-row", "data-name": track.name, "data-kind": track.kind, "data-per": track.per },
      el("span", { class: "track-cells" }, ...cells),
      el("span", {
        class: "track-name",
        text:
          track.name +
          (scale ? ` (${fmt(scale.lo, 2)}…${fmt(scale.hi, 2)})` : "") +
          (track.per === "sequence" ? " · per sequence" : ""),
      }),
    );
    row.style.paddingLeft = `${g.left}px`;
    return row;
  });
  box.replaceChildren(...rows);
  box.hidden = false;
  box.dataset.sequence = String(data.params.sequence);
  box.dataset.epoch = String(data.params.step);
  ui.tracksNote.textContent = "";
}

/** The tooltip of the track cell under the pointer. */
function showTrackTooltip(event) {
  const cell = event.target.closest?.(".track-cell");
  if (!cell || cell.dataset.value === undefined) {
    ui.tooltip.style.display = "none";
    return;
  }
  const row = cell.closest(".track-row");
  const v = JSON.parse(cell.dataset.value);
  const t = Number(cell.dataset.t);
  const label = state.heatmap?.labels[t];
  const shown = row.dataset.kind === "number" ? fmt(v, 4) : JSON.stringify(v);
  ui.tooltip.textContent =
    `${row.dataset.name}${row.dataset.per === "sequence" ? " (of the sequence)" : ""}\n` +
    `step ${t}   input ${JSON.stringify(label)}\n` +
    `= ${shown}`;
  ui.tooltip.style.display = "block";
  const x = Math.min(event.clientX + 14, window.innerWidth - ui.tooltip.offsetWidth - 4);
  const y = Math.min(event.clientY + 14, window.innerHeight - ui.tooltip.offsetHeight - 4);
  ui.tooltip.style.left = `${x}px`;
  ui.tooltip.style.top = `${y}px`;
}

/** The rows' element, to put under the heatmap. */
export function buildTracks() {
  ui.tracks = el("div", { id: "tracks" });
  ui.tracks.hidden = true;
  ui.tracksNote = el("p", { class: "note", id: "tracks-note" });
  ui.tracks.addEventListener("mousemove", showTrackTooltip);
  ui.tracks.addEventListener("mouseleave", () => {
    ui.tooltip.style.display = "none";
  });
  return [ui.tracks, ui.tracksNote];
}
