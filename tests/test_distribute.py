"""train.py under --strategy (1, 2 devices, 2 workers: same losses, killed and
resumed) and --precision (mixed_bfloat16 against keras.layers.LSTM)."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from keras_lstm.experiments import faults, tasks
from keras_lstm.experiments import model as model_lib
from keras_lstm.experiments import run as experiment
from keras_lstm.experiments.distribute import describe_lost_worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train  # noqa: E402

# Two epochs of two steps: the second epoch's loss follows an update made from
# gradients all-reduced over the devices (or workers).
TINY = [
    "--units", "4", "--num-train", "32", "--num-val", "8", "--batch-size", "16",
    "--seq-len", "6", "--epochs", "2", "--probe-size", "4",
]  # fmt: skip


# Keras 3.15 clips each replica's share of the gradient before it sums them
# (SGD with clipnorm=1 steps 1.9x farther on 2 devices than on one), so with
# clipping the optimizer's moments depend on the devices; Adam's steps hardly do.
# A run resumed on other devices continues the same only without clipping.
UNCLIPPED = [*TINY, "--clipnorm", "0"]
# bfloat16 keeps 8 bits of mantissa (2**-8 = 0.4%): the same model computed in
# another order drifts by a few of its steps. Measured between the two layers
# here: 0.2% on val_loss, 0.003 on predictions of size 0.11.
RTOL_BFLOAT16 = 1e-2
ATOL_BFLOAT16 = 1e-2


def train_py(args, env=None):
    """Starts train.py in a fresh process (devices are set before TensorFlow's
    first op) with its output in a pipe."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *map(str, args)],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish(process, timeout=300):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, output[-3000:]
    return output


def losses(run_dir):
    """The best epoch's logs (training and validation loss) and its number."""
    state = json.loads((run_dir / "resume" / "state.json").read_text())
    return state["best_epoch"], state["best_logs"]


def hparams(run_dir):
    """The HParams a run recorded for TensorBoard, read back with its loader."""
    accumulator = event_accumulator.EventAccumulator(str(run_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")
    info = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    return {
        name: value.string_value or value.number_value
        for name, value in info.hparams.items()
    }


def assert_same_losses(run_dir, reference):
    epoch, logs = losses(run_dir)
    want_epoch, want = reference
    assert epoch == want_epoch
    assert logs.keys() == want.keys()
    for name in want:
        assert logs[name] == pytest.approx(want[name], rel=1e-4), name


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("one_device")
    assert train.main([*TINY, "--logdir", str(logdir), "--run-name", "one"]) == 0
    return losses(logdir / "one")


@pytest.fixture(scope="module")
def one_device_resumed(tmp_path_factory):
    """One device, 1 epoch, then 1 more with --resume: the losses after the first
    epoch and at the end (a resumed epoch draws its order from its own seed)."""
    logdir = tmp_path_factory.mktemp("one_device_resumed")
    args = [*UNCLIPPED, "--logdir", str(logdir), "--run-name", "one"]
    assert train.main([*args, "--epochs", "1"]) == 0
    first = losses(logdir / "one")
    assert train.main([*args, "--resume"]) == 0
    return first, losses(logdir / "one")


def test_two_logical_cpu_devices_killed_and_resumed_give_the_losses_of_one(
    tmp_path, one_device_resumed
):
    args = [*UNCLIPPED, "--logdir", tmp_path, "--run-name", "two"]
    args += ["--strategy", "mirrored", "--devices", "2"]
    # Killed once the first epoch is committed, before anything else is written.
    killed = train_py(args, env={faults.CRASH_AT: "checkpoint_saved:1"})
    output, _ = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, output[-3000:]
    first, resumed = one_device_resumed
    assert_same_losses(tmp_path / "two", first)

    output = finish(train_py([*args, "--resume"]))
    assert "Epoch 2/2" in output and "Epoch 1/2" not in output
    assert "Run directory:" in output
    assert_same_losses(tmp_path / "two", resumed)
    recorded = hparams(tmp_path / "two")
    assert recorded["strategy"] == "mirrored"
    assert recorded["precision"] == "float32"


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_give_the_losses_of_one_and_only_the_chief_writes(
    tmp_path, one_device
):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [*TINY, "--logdir", tmp_path, "--run-name", "mw"]
    processes = [
        train_py(
            [*args, "--strategy", "multi_worker"],
            env={
                "TF_CONFIG": json.dumps(
                    {
                        "cluster": {"worker": workers},
                        "task": {"type": "worker", "index": index},
                    }
                )
            },
        )
        for index in range(2)
    ]
    outputs = [finish(p) for p in processes]
    assert "Run directory:" in outputs[0]
    assert "Run directory:" not in outputs[1]
    assert sorted(os.listdir(tmp_path)) == ["mw"]
    assert_same_losses(tmp_path / "mw", one_device)


def test_a_killed_worker_stops_the_other_in_one_line_and_the_run_resumes(
    tmp_path, one_device_resumed, capsys
):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [*UNCLIPPED, "--logdir", tmp_path, "--run-name", "mw"]
    processes = []
    for index in range(2):
        task = {"type": "worker", "index": index}
        env = {"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": task})}
        if index == 1:  # after its first step of the second epoch
            env[faults.CRASH_AT] = "train_batch:2"
        processes.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "train.py"), *map(str, args)]
                + ["--strategy", "multi_worker"],
                cwd=REPO,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        )
    chief, worker = processes
    try:
        # The collective timeout is 120 s; a hang would end here, not in CI's.
        _, err = chief.communicate(timeout=240)
        worker.communicate(timeout=60)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert worker.returncode == -signal.SIGKILL
    assert chief.returncode == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("train.py: error: a worker of the cluster stopped")
    first, resumed = one_device_resumed
    assert_same_losses(tmp_path / "mw", first)
    assert not (tmp_path / "mw" / "metrics.json").exists()

    # Here on one device: where a run trains does not change what it computes.
    argv = [*args, "--resume"]
    assert train.main([str(a) for a in argv]) == 0
    assert "Epoch 2/2" in capsys.readouterr().out
    assert_same_losses(tmp_path / "mw", resumed)


def test_mixed_bfloat16_trains_as_keras_lstm_does(tmp_path, monkeypatch):
    args = [*TINY, "--logdir", str(tmp_path), "--precision", "mixed_bfloat16"]
    assert train.main([*args, "--run-name", "ours"]) == 0

    def keras_lstm_layer(units, variant, **kwargs):
        assert variant == "standard"
        return keras.layers.LSTM(units, **kwargs)

    # The same command, the same data and initial weights, Keras's layer (whose
    # gates there is no way to log).
    monkeypatch.setattr(model_lib, "LSTM", keras_lstm_layer)
    monkeypatch.setattr(
        experiment, "GateTensorBoard", lambda *a, **k: keras.callbacks.Callback()
    )
    assert train.main([*args, "--run-name", "keras"]) == 0
    monkeypatch.undo()

    ours, theirs = (tmp_path / name for name in ("ours", "keras"))
    epoch, logs = losses(ours)
    assert losses(theirs)[0] == epoch
    for name, value in losses(theirs)[1].items():
        assert logs[name] == pytest.approx(value, rel=RTOL_BFLOAT16), name
    task = tasks.make_task("adding", seq_len=6, seed=0, num_train=32, num_val=8)
    predictions = []
    for run_dir in (ours, theirs):
        model = keras.saving.load_model(run_dir / "best.keras")
        assert model.get_layer("lstm").compute_dtype == "bfloat16"
        predictions.append(np.asarray(model(task.x_val)))
    np.testing.assert_allclose(*predictions, rtol=RTOL_BFLOAT16, atol=ATOL_BFLOAT16)
    assert hparams(ours)["precision"] == "mixed_bfloat16"


def test_mixed_float16_trains_to_a_finite_loss(tmp_path, capsys):
    args = [*TINY, "--epochs", "1", "--logdir", str(tmp_path), "--run-name", "half"]
    assert train.main([*args, "--precision", "mixed_float16"]) == 0
    metrics = json.loads((tmp_path / "half" / "metrics.json").read_text())
    assert math.isfinite(metrics["val_loss"])
    _, logs = losses(tmp_path / "half")
    assert math.isfinite(logs["loss"])
    saved = tmp_path / "half" / "best.keras"
    with zipfile.ZipFile(saved) as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    policies = {
        layer["config"]["name"]: layer["config"]["dtype"]["config"]["name"]
        for layer in layers[1:]
    }
    assert policies == {"lstm": "mixed_float16", "head": "float32"}


@pytest.mark.parametrize(
    "args, env, flag",
    [
        (["--devices", "2"], {}, "--devices"),
        (["--strategy", "mirrored", "--devices", "0"], {}, "--devices"),
        (["--strategy", "multi_worker"], {}, "--strategy"),
        (["--strategy", "multi_worker"], {"TF_CONFIG": "{not json"}, "--strategy"),
        (
            ["--strategy", "multi_worker"],
            {
                "TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": '
                '"worker", "index": 1}}'
            },
            "--strategy",
        ),  # fmt: skip
        (["--strategy", "parameter_server"], {}, "--strategy"),
        (["--precision", "float16"], {}, "--precision"),
    ],
)
def test_bad_combination_exits_2_with_one_line_naming_the_flag(
    tmp_path, capsys, monkeypatch, args, env, flag
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert train.main([*TINY, "--logdir", str(tmp_path / "logs"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"argument `{flag}`" in err
    assert not (tmp_path / "logs").exists()


def test_a_lost_worker_is_described_in_one_line():
    message = (
        "Graph execution error:\n\n{{function_node __wrapped__CollectiveReduceV2}} "
        "Collective ops is aborted by: The following tasks are unhealthy (stopped "
        "sending heartbeats):\n/job:worker/replica:0/task:1\nThe error could be from "
        "a previous operation."
    )
    error = tf.errors.UnavailableError(None, None, message)
    assert describe_lost_worker(error) == (
        "UnavailableError: Collective ops is aborted by: The following tasks are "
        "unhealthy (stopped sending heartbeats): /job:worker/replica:0/task:1"
    )
