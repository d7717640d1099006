"""train.py under --strategy (1, 2 devices, 2 workers: same losses) and --precision."""

import json
import math
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tensorflow as tf

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
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    return state["best_epoch"], state["best_logs"]


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


def test_two_logical_cpu_devices_give_the_losses_of_one(tmp_path, one_device):
    args = [*TINY, "--logdir", tmp_path, "--run-name", "two"]
    output = finish(train_py([*args, "--strategy", "mirrored", "--devices", "2"]))
    assert "Run directory:" in output
    assert_same_losses(tmp_path / "two", one_device)


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


def test_mixed_float16_trains_to_a_finite_loss(tmp_path, capsys):
    args = [*TINY, "--epochs", "1", "--logdir", str(tmp_path), "--run-name", "half"]
    assert train.main([*args, "--precision", "mixed_float16"]) == 0
    metrics = json.loads((tmp_path / "half" / "metrics.json").read_text())
    assert math.isfinite(metrics["val_loss"])
    _, logs = losses(tmp_path / "half")
    assert math.isfinite(logs["loss"])
    saved = tmp_path / "half" / "checkpoint" / "last.keras"
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
