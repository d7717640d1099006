"""A real TensorBoard server, started on a fresh run, serves every gate tag."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import keras_lstm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train  # noqa: E402

SIGMOID_GATES = ("input_gate", "forget_gate", "output_gate")
STARTUP_SECONDS = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def trained_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("tb") / "logs"
    argv = ["--logdir", str(logdir), "--run-name", "tiny", "--epochs", "1"]
    argv += ["--seq-len", "6", "--units", "3", "--num-train", "16"]
    argv += ["--num-val", "4", "--batch-size", "16"]
    assert train.main(argv) == 0
    return logdir


@contextlib.contextmanager
def tensorboard_server(logdir, scratch, ready=lambda url: get(f"{url}/data/runs")):
    """A real `tensorboard` on 127.0.0.1 over `logdir`, once `ready(url)`; stopped
    on exit. Its log and temporary files go to `scratch`."""
    port = free_port()
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    log_path = scratch / "tensorboard.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
            + ["--host", "127.0.0.1", "--port", str(port)],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(scratch)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if ready(url):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, (
                f"TensorBoard was not ready in time:\n{log_path.read_text()}"
            )
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(trained_logdir, tmp_path_factory):
    with tensorboard_server(
        trained_logdir, tmp_path_factory.mktemp("tb_scratch")
    ) as url:
        yield url


def poll(url, wanted, what):
    """Fetches `url` until `wanted(answer)`; the server loads in the background."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        answer = get(url)
        if wanted(answer):
            return answer
        assert time.monotonic() < deadline, f"{what}: {answer}"
        time.sleep(0.5)


def gate_tags(kind):
    tags = set()
    for gate in keras_lstm.GATES:
        tags |= {
            "histograms": {f"lstm/{gate}/activations"},
            "scalars": {f"lstm/{gate}/mean"},
            "images": {f"lstm/{gate}/heatmap"},
        }[kind]
    for gate in SIGMOID_GATES:
        tags |= {
            "histograms": set(),
            "scalars": {
                f"lstm/{gate}/left_saturated",
                f"lstm/{gate}/right_saturated",
            },
            "images": {f"lstm/{gate}/saturation"},
        }[kind]
    return tags


def test_dashboards_are_enabled(server):
    listing = poll(
        f"{server}/data/plugins_listing",
        lambda d: all(
            d.get(p, {}).get("enabled")
            for p in ("scalars", "histograms", "images", "hparams")
        ),
        "dashboards not enabled",
    )
    assert listing["histograms"]["enabled"]


@pytest.mark.parametrize("kind", ["histograms", "scalars", "images"])
def test_gate_tags_are_served(server, kind):
    run = "tiny/gates"
    answer = poll(
        f"{server}/data/plugin/{kind}/tags",
        lambda d: gate_tags(kind) <= set(d.get(run, {})),
        f"{kind} tags of {run}",
    )
    assert set(answer[run]) == gate_tags(kind)
    for tag, info in answer[run].items():
        assert info["description"].strip(), tag


def test_forget_gate_filter_matches_only_forget_gates(server):
    answer = poll(
        f"{server}/data/plugin/scalars/tags",
        lambda d: "tiny/gates" in d,
        "scalar tags",
    )
    matched = {t for t in answer["tiny/gates"] if "forget_gate" in t}
    assert matched == {
        "lstm/forget_gate/mean",
        "lstm/forget_gate/left_saturated",
        "lstm/forget_gate/right_saturated",
    }


def test_training_curves_are_served(server):
    answer = poll(
        f"{server}/data/plugin/scalars/tags",
        lambda d: "epoch_loss" in d.get("tiny/train", {}),
        "training curves",
    )
    assert "epoch_loss" in answer["tiny/validation"]


def test_hparams_dashboard_lists_the_session(server):
    request = {
        "startIndex": 0,
        "sliceSize": 100,
        "allowedStatuses": [
            "STATUS_UNKNOWN",
            "STATUS_SUCCESS",
            "STATUS_FAILURE",
            "STATUS_RUNNING",
        ],
    }
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        groups = get(f"{server}/data/plugin/hparams/session_groups", body=request)
        if groups.get("totalSize"):
            break
        assert time.monotonic() < deadline, groups
        time.sleep(0.5)
    sessions = [s["name"] for g in groups["sessionGroups"] for s in g["sessions"]]
    assert sessions == ["tiny"]
    (group,) = groups["sessionGroups"]
    assert group["hparams"]["units"] == 3
    assert group["hparams"]["task"] == "adding"


def test_hparams_metrics_are_the_final_results_beside_their_baselines(server):
    experiment = get(
        f"{server}/data/plugin/hparams/experiment", body={"experimentName": ""}
    )
    names = {
        (m["name"].get("group", ""), m["name"]["tag"])
        for m in experiment["metricInfos"]
    }
    assert ("", "final/val_loss") in names
    assert ("", "final/baseline_val_loss") in names
    assert ("validation", "epoch_loss") in names
    assert not any("gate" in tag for _, tag in names), names
