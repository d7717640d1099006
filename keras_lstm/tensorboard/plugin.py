"""The "LSTM gates" TensorBoard dashboard: the plugin that serves its data.

TensorBoard finds it through the `tensorboard_plugins` entry point of the
installed keras_lstm (`pip install -e .`). Its page (`static/index.js` and
the modules beside it) asks, under `/data/plugin/lstm_gates/`, for JSON:

    constants                                 gates, thresholds, colours (`palette`)
    runs                                      runs, their layers, steps, shapes
    heatmap?run&layer&step&sequence&gate      units x time of one probe sequence
    unit?run&layer&step&sequence&unit         one unit's six gates over time
    units?run&layer&step&gate                 per unit: mean, saturation, variation
    saturation?run&layer&step                 per unit: left/right, sigmoid gates
    history?run&layer&sequence&unit&gate      one unit across the logged steps
    select?run&layer&step&gate&sequence&start&stop[&threshold&off_around]
                                              the units on over a range of steps
    matches?run&layer&step&gate&units[&threshold&min_on&min_length&limit]
                                              where those units are on together
    tracks?run&step[&sequence]                annotation tracks (target, loss...)

A bad or missing parameter answers 400 with one line of text, and so does a
layer whose data is not as `summary` writes it (checked by `summary`'s
readers). `runs` leaves out the layers and steps it can see are bad without
reading a blob (bad metadata or mask, and blobs a data route found bad), and
logs why once. Data comes from TensorBoard's data provider, which keeps a
sample of each series' steps (by default 10 here; `--samples_per_plugin
lstm_gates=0` keeps every one).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import mimetypes
import os
import posixpath
import threading

import numpy as np
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from keras_lstm import hypotheses
from keras_lstm._checks import ArgumentError
from keras_lstm.cell import GATES
from keras_lstm.gates import SIGMOID_GATES, saturated_fractions
from keras_lstm.tensorboard import palette
from keras_lstm.tensorboard.summary import (
    GATES_TAG,
    LABELS_TAG,
    MASK_TAG,
    MODEL_TAG,
    PLUGIN_NAME,
    PROBE_TAG,
    REMOVAL_TAG,
    TRACKS_TAG,
    FormatError,
    check_mask,
    decode_gates,
    decode_tracks,
    gates_content,
    read_model,
    read_probe,
)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_ROUTE_PREFIX = f"/data/plugin/{PLUGIN_NAME}/"
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
# The data provider returns at most this many steps per series; its own
# sampling (--samples_per_plugin) decides how many it kept.
_ALL_STEPS = 1_000_000
# Decoded steps kept between requests (one step of one layer each): the page
# asks for several views of the same step in a row.
_CACHE_BYTES = 256 * 2**20
# `matches`: the most matches answered unless `limit` says otherwise, and the
# steps of input shown on each side of a match.
_MATCHES_LIMIT = 100
_MATCH_CONTEXT = 4
_log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """A request the plugin cannot answer: 400, with this one-line message."""


class _BadData(BadRequest):
    """A layer's data at one step is not as `summary` writes it."""


def _route(handler):
    """A WSGI app from `handler(self, request) -> JSON-able`; 400 on BadRequest."""

    @wrappers.Request.application
    def app(self, request):
        try:
            body = handler(self, request)
        except BadRequest as error:
            return http_util.Respond(request, str(error), "text/plain", code=400)
        return http_util.Respond(request, body, "application/json")

    app.__name__ = handler.__name__
    app.__doc__ = handler.__doc__
    return app


class GatesPlugin(base_plugin.TBPlugin):
    """Serves every gate of every LSTM layer, as written by
    `GateTensorBoard` and `keras_lstm.write_gate_dashboard`."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._provider = context.data_provider
        self._cache = _ArrayCache(_CACHE_BYTES)
        self._lock = threading.Lock()
        # The model of the last removal asked for, by blob key: loading one
        # takes longer than evaluating it on the probe.
        self._models = {}
        self._model_lock = threading.Lock()
        self._logged = set()  # (run, layer, problem)
        # (experiment, blob key, wall time) -> problem, of the blobs a data
        # route found bad; `runs` leaves their steps out.
        self._bad_blobs = {}

    def get_plugin_apps(self):
        # Exact routes win over the static catch-all (TensorBoard tries them
        # first).
        return {
            "/constants": self._serve_constants,
            "/runs": self._serve_runs,
            "/heatmap": self._serve_heatmap,
            "/unit": self._serve_unit,
            "/units": self._serve_units,
            "/saturation": self._serve_saturation,
            "/history": self._serve_history,
            "/select": self._serve_select,
            "/matches": self._serve_matches,
            "/tracks": self._serve_tracks,
            "/remove": self._serve_remove,
            "/*": self._serve_static,
        }

    def is_active(self) -> bool:
        from tensorboard import context

        if self._provider is None:
            return False
        series = self._provider.list_blob_sequences(
            context.RequestContext(), experiment_id="", plugin_name=PLUGIN_NAME
        )
        return any(series.values())

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name="LSTM gates"
        )

    # Routes.

    @_route
    def _serve_constants(self, request):
        """What the page draws with, `palette.constants()`: the same gates,
        thresholds and colours as the PNG pictures."""
        return palette.constants()

    @_route
    def _serve_runs(self, request):
        """`{"runs": {run: {"layers": {layer: {steps, units, sequences, time}}}}}`."""
        ctx, eid = _request_context(request)
        series = self._provider.list_blob_sequences(
            ctx, experiment_id=eid, plugin_name=PLUGIN_NAME
        )
        gates_tags = {
            run: [tag for tag in tags if _layer_of(tag) is not None]
            for run, tags in series.items()
        }
        gates_tags = {run: tags for run, tags in gates_tags.items() if tags}
        if not gates_tags:
            return {"runs": {}}
        tags = {t for run_tags in gates_tags.values() for t in run_tags}
        steps = self._read_all(
            self._provider.read_blob_sequences, ctx, eid, gates_tags, tags
        )
        mask_tags = {f"{_layer_of(t)}/{MASK_TAG}" for t in tags}
        masks = self._read_all(
            self._provider.read_tensors, ctx, eid, gates_tags, mask_tags
        )
        runs = {}
        for run in sorted(gates_tags):
            layers = {}
            for tag in sorted(gates_tags[run]):
                layer = _layer_of(tag)
                data = steps.get(run, {}).get(tag, [])
                mask = masks.get(run, {}).get(f"{layer}/{MASK_TAG}", [])
                if not data or not mask:
                    continue
                listed = self._listed_layer(
                    eid, run, layer, series[run][tag], data, mask
                )
                if listed is not None:
                    layers[layer] = listed
            if layers:
                runs[run] = {"layers": layers}
        return {"runs": runs}

    def _listed_layer(self, eid, run, layer, series, data, masks) -> dict | None:
        """A layer's entry in `runs`, without the steps that are bad as far as
        can be seen without reading a blob; None if none is left."""
        try:
            content = gates_content(series.plugin_content)
        except FormatError as error:
            self._log_once(run, layer, str(error))
            return None
        kept = {}
        for datum in data:
            try:
                kept[datum.step] = self._checked_step(eid, run, layer, datum, masks)
            except _BadData:
                continue  # logged
        if not kept:
            return None
        sequences, time = kept[max(kept)].mask.shape
        return {
            "steps": sorted(kept),
            "units": int(content.get("units", 0)),
            "sequences": int(sequences),
            "time": int(time),
        }

    @_route
    def _serve_heatmap(self, request):
        """One gate of one probe sequence: `values`, units x time."""
        step = self._step(request)
        sequence = _int_arg(request, "sequence", step.sequences)
        gate = _choice_arg(request, "gate", GATES)
        gates = self._gates(request, step)
        values = gates[GATES.index(gate), sequence].T  # (units, time)
        return {
            "gate": gate,
            "units": int(values.shape[0]),
            "time": int(values.shape[1]),
            "labels": self._labels(request, step)[sequence].tolist(),
            "mask": step.mask[sequence].tolist(),
            "values": _floats(values),
        }

    @_route
    def _serve_unit(self, request):
        """One unit of one probe sequence: its six gates over time."""
        step = self._step(request)
        sequence = _int_arg(request, "sequence", step.sequences)
        gates = self._gates(request, step)
        unit = _int_arg(request, "unit", gates.shape[-1])
        traces = gates[:, sequence, :, unit]  # (6, time)
        return {
            "unit": unit,
            "labels": self._labels(request, step)[sequence].tolist(),
            "mask": step.mask[sequence].tolist(),
            "traces": dict(zip(GATES, _floats(traces), strict=True)),
        }

    @_route
    def _serve_units(self, request):
        """Per unit, over every probe sequence's unmasked steps: mean, left and
        right saturation, and variation (mean over sequences of the standard
        deviation over time); and, where `<layer>/removal` was logged at the
        step, the probe's loss change when the unit is removed (else null)."""
        step = self._step(request)
        gate = _choice_arg(request, "gate", GATES)
        values = self._gates(request, step)[GATES.index(gate)]
        stats = unit_statistics(values, step.mask)
        units = values.shape[-1]
        removal = self._removal(request, step, units)
        return {
            "gate": gate,
            "removal_logged": removal is not None,
            "units": [
                {
                    "unit": k,
                    **{name: float(v[k]) for name, v in stats.items()},
                    "removal": None if removal is None else removal[k],
                }
                for k in range(units)
            ],
        }

    @_route
    def _serve_saturation(self, request):
        """Per sigmoid gate, per unit: `[left, right]` saturated fractions."""
        step = self._step(request)
        gates = self._gates(request, step)
        answer = {}
        for gate in SIGMOID_GATES:
            stats = unit_statistics(gates[GATES.index(gate)], step.mask)
            pairs = np.stack([stats["left_saturated"], stats["right_saturated"]], 1)
            answer[gate] = pairs.tolist()
        return answer

    @_route
    def _serve_history(self, request):
        """One unit of one gate at every logged step: the chosen sequence's
        values, and the unit's mean and saturation over all sequences."""
        run, layer = self._run_layer(request)
        ctx, eid = _request_context(request)
        blobs = self._blobs(ctx, eid, run, layer)
        masks = self._series(ctx, eid, run, f"{layer}/{MASK_TAG}")
        gate = _choice_arg(request, "gate", GATES)
        answer = {
            "steps": [],
            "values": [],
            "mean": [],
            "left_saturated": [],
            "right_saturated": [],
        }
        # Checked against the latest step; an earlier step written with fewer
        # sequences or units, or whose data is bad (as `runs` does), is left
        # out.
        eid = plugin_util.experiment_id(request.environ)
        latest = max(blobs)
        last = self._checked_step(eid, run, layer, blobs[latest], masks)
        sequence = _int_arg(request, "sequence", last.sequences)
        unit = _int_arg(request, "unit", self._gates(request, last).shape[-1])
        for number in sorted(blobs):
            try:
                step = self._checked_step(eid, run, layer, blobs[number], masks)
                values = self._gates(request, step)[GATES.index(gate)]
            except _BadData:
                continue
            if sequence >= step.sequences or unit >= values.shape[-1]:
                continue
            stats = unit_statistics(values[..., unit : unit + 1], step.mask)
            answer["steps"].append(number)
            answer["values"].append(_floats(values[sequence, :, unit]))
            for name in ("mean", "left_saturated", "right_saturated"):
                answer[name].append(float(stats[name][0]))
        return answer

    @_route
    def _serve_select(self, request):
        """The units of one gate that are on throughout steps `start..stop`
        of one probe sequence (`hypotheses.select_units`), ranked, with the
        rule in words."""
        step = self._step(request)
        sequence = _int_arg(request, "sequence", step.sequences)
        gate = _choice_arg(request, "gate", GATES)
        time = step.mask.shape[1]
        start = _int_arg(request, "start", time)
        stop = _int_arg(request, "stop", time)
        if stop < start:
            raise BadRequest(
                f"Received an invalid value for argument `stop`: expected a step "
                f"in [{start}, {time}) (start is {start}), got {stop}"
            )
        threshold = _float_arg(request, "threshold", hypotheses.DEFAULT_THRESHOLD)
        off_around = _bool_arg(request, "off_around")
        values = self._gates(request, step)[GATES.index(gate), sequence]
        with _as_bad_request():
            units = hypotheses.select_units(
                values, start, stop, threshold, off_around, step.mask[sequence]
            )
        return {
            "gate": gate,
            "sequence": sequence,
            "start": start,
            "stop": stop,
            "threshold": threshold,
            "off_around": off_around,
            "units": [
                {
                    "unit": u["unit"],
                    "min": _number(u["min"]),
                    "mean": _number(u["mean"]),
                }
                for u in units
            ],
            "rule": hypotheses.describe_selection(
                gate, threshold, start, stop, off_around
            ),
        }

    @_route
    def _serve_matches(self, request):
        """Where `units` of one gate are on together over every probe sequence
        (`hypotheses.find_matches`), the best `limit` ranked, each with the
        labels of its steps and of a few steps around them; the rule in words."""
        step = self._step(request)
        gate = _choice_arg(request, "gate", GATES)
        values = self._gates(request, step)[GATES.index(gate)]
        units = _units_arg(request, "units", values.shape[-1])
        threshold = _float_arg(request, "threshold", hypotheses.DEFAULT_THRESHOLD)
        min_on = _positive_arg(request, "min_on", len(units), len(units))
        min_length = _positive_arg(request, "min_length", 1, step.mask.shape[1])
        limit = _positive_arg(request, "limit", _MATCHES_LIMIT, None)
        with _as_bad_request():
            found = hypotheses.find_matches(
                values, units, threshold, min_on, min_length, step.mask
            )
        labels = self._labels(request, step)
        time = step.mask.shape[1]
        matches = []
        for match in found[:limit]:
            first = max(0, match["start"] - _MATCH_CONTEXT)
            last = min(time, match["stop"] + 1 + _MATCH_CONTEXT)
            shown = labels[match["sequence"], first:last].tolist()
            matches.append({**match, "from": first, "labels": shown})
        return {
            "gate": gate,
            "units": units,
            "threshold": threshold,
            "min_on": min_on,
            "min_length": min_length,
            "total": len(found),
            "matches": matches,
            "rule": hypotheses.describe_matches(
                gate, threshold, units, min_on, min_length
            ),
        }

    @_route
    def _serve_tracks(self, request):
        """The annotation tracks logged at `step` (target, prediction,
        p(target), loss), of one probe sequence or of all: `{"tracks": [{name,
        kind, per, values, range}]}`, `range` the `[min, max]` of a number
        track over every sequence. A run that logged none answers no tracks."""
        run = _text_arg(request, "run")
        ctx, eid = _request_context(request)
        steps = self._run_steps(ctx, eid, run)
        number = _step_arg(request, steps, f"run {run!r}")
        data = self._read_all(
            self._provider.read_tensors, ctx, eid, [run], [TRACKS_TAG]
        )
        series = data.get(run, {}).get(TRACKS_TAG, [])
        labels = _at_step(self._series(ctx, eid, run, LABELS_TAG), number)
        batch, time = labels.shape if labels.ndim == 2 else (0, 0)
        sequence = None
        if request.args.get("sequence") is not None:
            sequence = _int_arg(request, "sequence", batch)
        at_step = [d for d in series if d.step == number]
        if not at_step:
            return {"step": number, "sequence": sequence, "tracks": []}
        text = at_step[-1].numpy
        text = text.item() if isinstance(text, np.ndarray) and text.size == 1 else text
        try:
            tracks = decode_tracks(text, batch, time)
        except FormatError as error:
            raise BadRequest(f"Run {run!r}, step {number}: {error}") from None
        answer = []
        for track in tracks:
            shown = {key: track[key] for key in ("name", "kind", "per")}
            values = track["values"]
            if track["kind"] == "number":
                finite = [
                    v
                    for v in np.ravel(np.asarray(values, dtype=object))
                    if isinstance(v, (int, float)) and np.isfinite(v)
                ]
                shown["range"] = [min(finite), max(finite)] if finite else None
            shown["values"] = values if sequence is None else values[sequence]
            answer.append(shown)
        return {"step": number, "sequence": sequence, "tracks": answer}

    @_route
    def _serve_remove(self, request):
        """The probe's loss and metrics at `step` with `units` of `layer` held
        at zero (`state`: "hidden", the default, or "cell"), against the intact
        model: `keras_lstm.ablate` on the model and probe the run logged with
        its targets (`summary.write_removal_model`)."""
        step = self._step(request)
        units = _units_arg(request, "units", self._gates(request, step).shape[-1])
        state = "hidden"
        if request.args.get("state") is not None:
            state = _choice_arg(request, "state", ("hidden", "cell"))
        ctx, eid = _request_context(request)
        model_blob = self._blob_at(ctx, eid, step.run, MODEL_TAG, step.step)
        probe_blob = self._blob_at(ctx, eid, step.run, PROBE_TAG, None)
        if model_blob is None or probe_blob is None:
            raise BadRequest(
                f"Run {step.run!r} logged no model at step {step.step}: removals "
                "need the probe's targets (GateTensorBoard(..., targets=...)) and "
                "a compiled model"
            )
        from keras_lstm.ablation import ablate

        with self._model_lock:
            try:
                model = self._models.get(model_blob)
                if model is None:
                    model = read_model(
                        self._provider.read_blob(ctx, blob_key=model_blob)
                    )
                    self._models = {model_blob: model}  # the last one only
                x, y = read_probe(self._provider.read_blob(ctx, blob_key=probe_blob))
            except FormatError as error:
                raise BadRequest(
                    f"Run {step.run!r}, step {step.step}: {error}"
                ) from None
            with _as_bad_request():
                result = ablate(model, x, y, step.layer, units, state=state)
        return {
            "step": step.step,
            "layer": step.layer,
            "units": units,
            "state": state,
            "sequences": int(len(x)),
            "metrics": {name: _number(value) for name, value in result.items()},
        }

    def _blob_at(self, ctx, eid, run, tag, step) -> str | None:
        """The blob key of `tag` at `step` (None: the first step written)."""
        data = self._read_all(
            self._provider.read_blob_sequences, ctx, eid, [run], [tag]
        )
        series = sorted(data.get(run, {}).get(tag, []), key=lambda d: d.step)
        if step is not None:
            series = [d for d in series if d.step == step]
        if not series or not series[0].values:
            return None
        return series[0].values[0].blob_key

    @wrappers.Request.application
    def _serve_static(self, request):
        """A file of static/ (index.js, the modules it imports, style.css)."""
        name = request.path.split(_ROUTE_PREFIX, 1)[-1]
        path = _static_path(name)
        if path is None:
            return http_util.Respond(request, "Not found", "text/plain", code=404)
        with open(path, "rb") as f:
            content = f.read()
        extension = os.path.splitext(path)[1]
        content_type = _CONTENT_TYPES.get(extension) or (
            mimetypes.guess_type(path)[0] or "application/octet-stream"
        )
        return http_util.Respond(request, content, content_type)

    # Reading.

    def _run_layer(self, request) -> tuple[str, str]:
        return _text_arg(request, "run"), _text_arg(request, "layer")

    def _step(self, request) -> _Step:
        """The request's run, layer and step, with that step's mask."""
        run, layer = self._run_layer(request)
        ctx, eid = _request_context(request)
        blobs = self._blobs(ctx, eid, run, layer)
        number = _step_arg(request, blobs, f"layer {layer!r} in run {run!r}")
        masks = self._series(ctx, eid, run, f"{layer}/{MASK_TAG}")
        return self._checked_step(eid, run, layer, blobs[number], masks)

    def _blobs(self, ctx, eid, run, layer) -> dict[int, provider.BlobSequenceDatum]:
        """`{step: datum}` of a layer's gates, its metadata checked; no blob is
        read."""
        tag = f"{layer}/{GATES_TAG}"
        listed = self._provider.list_blob_sequences(
            ctx,
            experiment_id=eid,
            plugin_name=PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        data = {}
        if tag in listed.get(run, {}):
            data = self._read_all(
                self._provider.read_blob_sequences, ctx, eid, [run], [tag]
            )
        if run not in data and not self._has_run(ctx, eid, run):
            raise BadRequest(
                f"Received an invalid value for argument `run`: expected a run "
                f"with LSTM gates, got {run!r}"
            )
        series = data.get(run, {}).get(tag)
        if not series:
            raise BadRequest(
                f"Received an invalid value for argument `layer`: expected a "
                f"layer of run {run!r}, got {layer!r}"
            )
        try:
            gates_content(listed[run][tag].plugin_content)
        except FormatError as error:
            raise self._bad_data(run, layer, str(error)) from None
        return {d.step: d for d in series}

    def _checked_step(self, eid, run, layer, datum, masks) -> _Step:
        """The `_Step` of one datum of a layer's gates, or a `_BadData` if
        what is known of it without reading its blob is bad."""
        where = f"step {datum.step}: "
        if len(datum.values) != 1:
            raise self._bad_data(
                run,
                layer,
                where + f"gates: expected one blob per step, got {len(datum.values)}",
            )
        blob_key = datum.values[0].blob_key
        with self._lock:
            problem = self._bad_blobs.get((eid, blob_key, datum.wall_time))
        if problem is not None:
            raise self._bad_data(run, layer, problem)
        try:
            mask = check_mask(_at_step(masks, datum.step))
        except FormatError as error:
            raise self._bad_data(run, layer, where + str(error)) from None
        return _Step(run, layer, datum.step, blob_key, datum.wall_time, mask)

    def _bad_data(self, run, layer, problem: str) -> _BadData:
        """The error that answers a request for a layer whose data is bad;
        the problem is logged once."""
        self._log_once(run, layer, problem)
        return _BadData(f"Layer {layer!r} of run {run!r}: {problem}")

    def _log_once(self, run, layer, problem: str) -> None:
        """Logs once that `runs` leaves out a layer, or steps of it, and why:
        the page shows a 400's line only to whoever asked."""
        with self._lock:
            if (run, layer, problem) in self._logged:
                return
            self._logged.add((run, layer, problem))
        _log.warning(
            "LSTM gates: leaving out bad data of layer %r in run %r: %s",
            layer,
            run,
            problem,
        )

    def _read_all(self, read, ctx, eid, runs, tags) -> dict:
        """Every kept step of `tags` in `runs`, by `read` (the data provider's
        `read_blob_sequences` or `read_tensors`): `{run: {tag: [datum]}}`."""
        return read(
            ctx,
            experiment_id=eid,
            plugin_name=PLUGIN_NAME,
            downsample=_ALL_STEPS,
            run_tag_filter=provider.RunTagFilter(runs=sorted(runs), tags=sorted(tags)),
        )

    def _run_steps(self, ctx, eid, run) -> list[int]:
        """Every step at which some layer of `run` logged its gates."""
        series = self._provider.list_blob_sequences(
            ctx, experiment_id=eid, plugin_name=PLUGIN_NAME
        )
        tags = [tag for tag in series.get(run, {}) if _layer_of(tag) is not None]
        if not tags:
            raise BadRequest(
                f"Received an invalid value for argument `run`: expected a run "
                f"with LSTM gates, got {run!r}"
            )
        data = self._read_all(self._provider.read_blob_sequences, ctx, eid, [run], tags)
        return sorted({d.step for tag in tags for d in data.get(run, {}).get(tag, [])})

    def _removal(self, request, step: _Step, units: int) -> list | None:
        """Per unit, the loss change when removed, as logged at this very step
        (`<layer>/removal`), or None where it was not (or not as `summary`
        writes it)."""
        ctx, eid = _request_context(request)
        tag = f"{step.layer}/{REMOVAL_TAG}"
        data = self._read_all(self._provider.read_tensors, ctx, eid, [step.run], [tag])
        at_step = [
            d for d in data.get(step.run, {}).get(tag, []) if d.step == step.step
        ]
        if not at_step:
            return None
        values = np.asarray(at_step[-1].numpy)
        if values.shape != (units,) or values.dtype.kind != "f":
            self._log_once(
                step.run,
                step.layer,
                f"step {step.step}: removal: expected float ({units},), got "
                f"{values.dtype} {values.shape}",
            )
            return None
        return _floats(values)

    def _has_run(self, ctx, eid, run) -> bool:
        series = self._provider.list_blob_sequences(
            ctx, experiment_id=eid, plugin_name=PLUGIN_NAME
        )
        return run in series

    def _series(self, ctx, eid, run, tag) -> list:
        """Every kept step of a small tensor series (a mask, the labels)."""
        data = self._read_all(self._provider.read_tensors, ctx, eid, [run], [tag])
        series = data.get(run, {}).get(tag)
        if not series:
            raise BadRequest(f"Run {run!r} has no {tag!r} (written by keras_lstm?)")
        return series

    def _gates(self, request, step: _Step) -> np.ndarray:
        """The step's gates, float16 `(6, batch, time, units)`, read once."""
        key = (plugin_util.experiment_id(request.environ), step.blob_key, step.wall)
        array = self._cache.get(key)
        problem = None
        if array is None:
            ctx = plugin_util.context(request.environ)
            try:
                array = decode_gates(
                    self._provider.read_blob(ctx, blob_key=step.blob_key)
                )
            except FormatError as error:
                problem = f"step {step.step}: {error}"
            else:
                self._cache.put(key, array)
        if problem is None and array.shape[1:3] != step.mask.shape:
            problem = (
                f"step {step.step}: gates of {array.shape[1:3]} (sequence, time) "
                f"and a mask of {step.mask.shape}"
            )
        if problem is not None:
            with self._lock:
                self._bad_blobs[key] = problem
            raise self._bad_data(step.run, step.layer, problem)
        return array

    def _labels(self, request, step: _Step) -> np.ndarray:
        ctx, eid = _request_context(request)
        labels = _at_step(self._series(ctx, eid, step.run, LABELS_TAG), step.step)
        if labels.shape != step.mask.shape:
            return np.broadcast_to(
                np.arange(step.mask.shape[1]).astype(str), step.mask.shape
            )
        return np.vectorize(_text, otypes=[str])(labels)


class _Step:
    """One logged step of one layer: where its gates are, and its mask."""

    def __init__(self, run, layer, step, blob_key, wall, mask):
        self.run, self.layer, self.step = run, layer, step
        self.blob_key, self.wall = blob_key, wall
        self.mask = mask  # bool (sequence, time), as `check_mask` returns it
        self.sequences = self.mask.shape[0]


def unit_statistics(values: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per unit, over the steps `mask` keeps in every sequence.

    Args:
        values: One gate, `(batch, time, units)`.
        mask: `(batch, time)`, False at skipped steps.

    Returns:
        `{"mean", "left_saturated", "right_saturated", "variation"}`, each
        `(units,)`: the mean; the fractions below 0.1 and above 0.9; the mean
        over sequences (with a kept step) of the standard deviation over time.
        Zeros where no step is kept.
    """
    values = np.asarray(values, dtype=np.float32)
    kept = values[mask]  # (steps, units)
    units = values.shape[-1]
    if kept.shape[0] == 0:
        zeros = np.zeros(units)
        return dict.fromkeys(
            ("mean", "left_saturated", "right_saturated", "variation"), zeros
        )
    weights = mask[..., None].astype(np.float32)  # (batch, time, 1)
    counts = weights.sum(axis=1)  # (batch, 1)
    present = counts[:, 0] > 0
    means = (values * weights).sum(axis=1) / np.maximum(counts, 1)
    variances = (((values - means[:, None]) * weights) ** 2).sum(axis=1)
    std = np.sqrt(variances / np.maximum(counts, 1))[present]
    left, right = saturated_fractions(kept)
    return {
        "mean": kept.mean(axis=0),
        "left_saturated": left,
        "right_saturated": right,
        "variation": std.mean(axis=0),
    }


class _ArrayCache:
    """Least recently used arrays, up to a total size in bytes."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._arrays = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            array = self._arrays.get(key)
            if array is not None:
                self._arrays.move_to_end(key)
            return array

    def put(self, key, array) -> None:
        with self._lock:
            self._arrays[key] = array
            total = sum(a.nbytes for a in self._arrays.values())
            while total > self._max_bytes and len(self._arrays) > 1:
                _, dropped = self._arrays.popitem(last=False)
                total -= dropped.nbytes


def _layer_of(tag: str) -> str | None:
    suffix = f"/{GATES_TAG}"
    return tag[: -len(suffix)] if tag.endswith(suffix) else None


def _at_step(series: list, step: int) -> np.ndarray:
    """The value at `step`, or else at the latest step before it (each
    series keeps its own sample of steps), or else the first."""
    before = [d for d in series if d.step <= step]
    return (before[-1] if before else series[0]).numpy


def _floats(values: np.ndarray) -> list:
    """float16 values as JSON numbers; NaN and infinities as null."""
    values = np.asarray(values, dtype=np.float64)
    if np.isfinite(values).all():
        return values.tolist()
    return np.where(np.isfinite(values), values, None).tolist()


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _request_context(request):
    return plugin_util.context(request.environ), plugin_util.experiment_id(
        request.environ
    )


def _text_arg(request, name: str) -> str:
    value = request.args.get(name)
    if not value:
        raise BadRequest(f"Missing argument `{name}`")
    return value


def _int_arg(request, name: str, stop: int | None) -> int:
    """A non-negative integer argument, below `stop` if given."""
    text = _text_arg(request, name)
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 0 or (stop is not None and value >= stop):
        expected = "a non-negative integer"
        if stop is not None:
            expected = f"an integer in [0, {stop})"
        raise BadRequest(
            f"Received an invalid value for argument `{name}`: expected "
            f"{expected}, got {text!r}"
        )
    return value


def _step_arg(request, steps, of: str) -> int:
    """The `step` argument, one of `steps` (those of `of`, e.g. "run 'a'")."""
    number = _int_arg(request, "step", None)
    if number not in steps:
        raise BadRequest(
            f"Received an invalid value for argument `step`: expected one of "
            f"the steps of {of} ({', '.join(map(str, sorted(steps)))}), "
            f"got {number}"
        )
    return number


def _float_arg(request, name: str, default: float) -> float:
    """A finite number argument, `default` where it is absent."""
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not np.isfinite(value):
        raise BadRequest(
            f"Received an invalid value for argument `{name}`: expected a finite "
            f"number, got {text!r}"
        )
    return value


def _bool_arg(request, name: str) -> bool:
    """`true`/`1` or `false`/`0`; False where it is absent."""
    text = request.args.get(name)
    if text is None:
        return False
    if text.lower() not in ("true", "false", "1", "0"):
        raise BadRequest(
            f"Received an invalid value for argument `{name}`: expected true or "
            f"false, got {text!r}"
        )
    return text.lower() in ("true", "1")


def _positive_arg(request, name: str, default: int, most: int | None) -> int:
    """A positive integer argument, at most `most` if given; `default` where
    it is absent."""
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1 or (most is not None and value > most):
        expected = (
            "a positive integer" if most is None else f"an integer in [1, {most}]"
        )
        raise BadRequest(
            f"Received an invalid value for argument `{name}`: expected "
            f"{expected}, got {text!r}"
        )
    return value


def _units_arg(request, name: str, width: int) -> list[int]:
    """Distinct unit indices below `width`, comma separated: `3,17`."""
    text = _text_arg(request, name)
    try:
        units = [int(part) for part in text.split(",")]
    except ValueError:
        units = None
    if (
        units is None
        or len(set(units)) != len(units)
        or not all(0 <= u < width for u in units)
    ):
        raise BadRequest(
            f"Received an invalid value for argument `{name}`: expected distinct "
            f"unit indices in [0, {width}), comma separated, got {text!r}"
        )
    return units


@contextlib.contextmanager
def _as_bad_request():
    """`keras_lstm` argument errors as 400s (their message is one line)."""
    try:
        yield
    except ArgumentError as error:
        raise BadRequest(error.message()) from None


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _choice_arg(request, name: str, choices) -> str:
    value = _text_arg(request, name)
    if value not in choices:
        raise BadRequest(
            f"Received an invalid value for argument `{name}`: expected one of "
            f"{', '.join(choices)}, got {value!r}"
        )
    return value


def _static_path(name: str) -> str | None:
    """The file of static/ that `name` (from a URL) names, or None."""
    if not name or "\\" in name or "\0" in name:
        return None
    normal = posixpath.normpath(name)
    if normal.startswith(("/", "..")) or normal == ".":
        return None
    path = os.path.join(STATIC_DIR, *normal.split("/"))
    root = os.path.realpath(STATIC_DIR)
    if os.path.commonpath([os.path.realpath(path), root]) != root:
        return None
    return path if os.path.isfile(path) else None
