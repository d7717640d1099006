"""The LSTM gates dashboard over a log directory holding broken runs beside a
good one: a broken layer is left out of /runs and logged once, its data routes
answer 400 with one line, and the good run keeps being listed and served."""

import io
import json
import logging
import pickle
import tracemalloc

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_plugin import ROUTE, wsgi_client

import keras_lstm
from keras_lstm.cell import GATES
from keras_lstm.tensorboard import summary

BATCH, TIME, FEATURES, UNITS = 2, 5, 3, 4
LAYER = "encoder"
LOGGER = "keras_lstm.tensorboard.plugin"
GOOD = "good"
DATA_ROUTES = {
    "heatmap": {"step": 0, "sequence": 0, "gate": "forget_gate"},
    "unit": {"step": 0, "sequence": 0, "unit": 0},
    "units": {"step": 0, "gate": "input_gate"},
    "saturation": {"step": 0},
    "history": {"sequence": 0, "unit": 0, "gate": "cell_state"},
}


def gates(dtype=np.float16, count=None):
    count = len(GATES) if count is None else count
    values = np.random.default_rng(0).uniform(size=(count, BATCH, TIME, UNITS))
    return values.astype(dtype)  # (gate, sequence, time, unit)


def npy_header(shape, descr="<f2"):
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


GOOD_BLOB = summary.encode_array(gates())
# run: (gates blobs of step 0, mask, gates series content, words of the 400).
# The first four can be seen from the series' metadata and the mask, without
# reading a blob.
BAD_RUNS = {
    "mask_1d": ([GOOD_BLOB], np.ones(TIME, bool), None, ["mask", "(5,)"]),
    "mask_text": ([GOOD_BLOB], [["x"] * TIME] * BATCH, None, ["mask", "object"]),
    "units_text": ([GOOD_BLOB], None, {"units": "four"}, ["metadata", "'four'"]),
    "no_blob": ([], None, None, ["one blob", "got 0"]),
    "pickled": ([pickle.dumps(gates())], None, None, [".npy", "magic"]),
    "truncated": ([GOOD_BLOB[:-7]], None, None, ["bytes", "(6, 2, 5, 4)"]),
    # 48 TB claimed over 16 bytes.
    "huge_header": (
        [npy_header((6, 10**6, 10**6, 4)) + bytes(16)],
        None,
        None,
        ["bytes", "(6, 1000000, 1000000, 4)"],
    ),
    "two_gates": ([summary.encode_array(gates(count=2))], None, None, ["(2, 2, 5, 4)"]),
    # float16 is what write_layer writes, the only dtype read back.
    "float32": ([summary.encode_array(gates(np.float32))], None, None, ["float32"]),
}
SEEN_IN_METADATA = ["mask_1d", "mask_text", "units_text", "no_blob"]
SEEN_IN_BLOB = [run for run in BAD_RUNS if run not in SEEN_IN_METADATA]


def write_run(path, steps, content=None):
    """One layer at `steps` ({step: (gates blobs, mask or None)}), tagged and
    described as `summary.write_layer` writes it, with the given gates series
    content; one writer, so that the steps are read in order."""
    content = {"units": UNITS} if content is None else content
    writer = tf.summary.create_file_writer(str(path))
    for step, (blobs, mask) in steps.items():
        mask = np.ones((BATCH, TIME), bool) if mask is None else mask
        with writer.as_default(step=step):
            tf.summary.write(
                f"{LAYER}/{summary.GATES_TAG}",
                tf.constant(blobs, dtype=tf.string),
                metadata=summary._metadata("gates", "blob_sequence", content),
            )
            tf.summary.write(
                f"{LAYER}/{summary.MASK_TAG}",
                tf.constant(mask),
                metadata=summary._metadata("mask", "tensor"),
            )
            tf.summary.write(
                summary.LABELS_TAG,
                tf.constant([["a"] * TIME] * BATCH),
                metadata=summary._metadata("labels", "tensor"),
            )
    writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("bad_runs")
    for run, (blobs, mask, content, _) in BAD_RUNS.items():
        write_run(logdir / run, {0: (blobs, mask)}, content)
    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), keras_lstm.LSTM(UNITS, name=LAYER)]
    )
    probe = np.random.default_rng(1).normal(size=(BATCH, TIME, FEATURES))
    keras_lstm.write_gate_dashboard(model, probe.astype("float32"), None, logdir / GOOD)
    return logdir


def get(client, route, run, **params):
    response = client.get(ROUTE + route, query_string={"run": run, **params})
    return response.status_code, response.get_data(as_text=True)


def runs(client):
    status, body = get(client, "runs", GOOD)
    assert status == 200, body
    return json.loads(body)["runs"]


def request_every_data_route(client, run):
    for route, params in DATA_ROUTES.items():
        get(client, route, run, layer=LAYER, **params)


def test_runs_leaves_out_what_the_metadata_and_masks_show_bad(logdir):
    listed = runs(wsgi_client(logdir))
    assert listed[GOOD] == {
        "layers": {
            LAYER: {"steps": [0], "units": UNITS, "sequences": BATCH, "time": TIME}
        }
    }
    assert not set(SEEN_IN_METADATA) & set(listed)
    # A blob is read on a data route only: a run's latest gates can be tens of
    # MB each, more than /runs should read.
    assert set(SEEN_IN_BLOB) <= set(listed)


@pytest.mark.parametrize("route", DATA_ROUTES)
@pytest.mark.parametrize("run", BAD_RUNS)
def test_each_data_route_of_a_bad_run_answers_400_with_one_line(logdir, run, route):
    status, body = get(
        wsgi_client(logdir), route, run, layer=LAYER, **DATA_ROUTES[route]
    )
    assert status == 400, body
    assert body.strip() and "\n" not in body.strip()
    for word in [repr(run), repr(LAYER), *BAD_RUNS[run][3]]:
        assert word in body


def test_a_layer_found_bad_on_a_data_route_leaves_runs_and_the_good_run_stays(
    logdir,
):
    client = wsgi_client(logdir)
    for run in BAD_RUNS:
        request_every_data_route(client, run)
    listed = runs(client)
    assert list(listed) == [GOOD]
    for route, params in DATA_ROUTES.items():
        status, body = get(client, route, GOOD, layer=LAYER, **params)
        assert status == 200, body


def test_each_bad_run_is_logged_once(logdir, caplog):
    client = wsgi_client(logdir)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            runs(client)
            for run in [*BAD_RUNS, GOOD]:
                request_every_data_route(client, run)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    for run in BAD_RUNS:
        assert len([m for m in messages if repr(run) in m]) == 1, (run, messages)
    assert not [m for m in messages if repr(GOOD) in m]
    assert len(messages) == len(BAD_RUNS)


def test_a_bad_earlier_step_is_left_out_and_the_layer_stays(tmp_path):
    good = ([GOOD_BLOB], None)
    write_run(tmp_path / "old_mask", {0: BAD_RUNS["mask_1d"][:2], 1: good})
    write_run(tmp_path / "old_blob", {0: BAD_RUNS["truncated"][:2], 1: good})
    client = wsgi_client(tmp_path)
    steps = {run: v["layers"][LAYER]["steps"] for run, v in runs(client).items()}
    assert steps == {"old_mask": [1], "old_blob": [0, 1]}
    status, body = get(client, "units", "old_blob", layer=LAYER, **DATA_ROUTES["units"])
    assert status == 400 and "step 0: gates blob" in body, body
    assert runs(client)["old_blob"]["layers"][LAYER]["steps"] == [1]
    for run in steps:
        status, body = get(
            client, "history", run, layer=LAYER, **DATA_ROUTES["history"]
        )
        assert status == 200, body
        assert json.loads(body)["steps"] == [1]


@pytest.mark.parametrize("run", SEEN_IN_BLOB)
def test_decode_gates_refuses_a_bad_blob_before_allocating(run):
    (blob,), _, _, words = BAD_RUNS[run]
    tracemalloc.start()
    try:
        with pytest.raises(summary.FormatError) as error:
            summary.decode_gates(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    for word in words:
        assert word in str(error.value)


def test_decode_gates_reads_back_what_write_layer_packs():
    packed = summary.stack_gates({g: v for g, v in zip(GATES, gates(), strict=True)})
    decoded = summary.decode_gates(summary.encode_array(packed))
    assert decoded.dtype == np.float16
    np.testing.assert_array_equal(decoded, packed)
    fortran = summary.encode_array(np.asfortranarray(packed))
    np.testing.assert_array_equal(summary.decode_gates(fortran), packed)
