"""How fast a local `tensorboard` answers the LSTM gates dashboard on a large layer.

Writes, with `keras_lstm.write_gate_dashboard`, a 256-unit layer's gates on 64 probe
sequences of 200 steps at `--steps` logged steps (random weights: the values do not
change the cost), starts `tensorboard --logdir ... --host 127.0.0.1` as a user would
(add `--load-fast false` for TensorBoard's Python loader), waits until it lists every
step, and times each route's first request and a repeat.

    python benchmarks/dashboard_latency.py [--steps 10] [--load-fast auto]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from test_tensorboard_server import free_port  # noqa: E402

import keras_lstm  # noqa: E402

UNITS, SEQUENCES, TIME, FEATURES = 256, 64, 200, 8
ROUTE = "/data/plugin/lstm_gates/"


def fetch(url):
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - start, body


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--load-fast", default="auto", choices=["auto", "false"])
    args = parser.parse_args()

    logdir = tempfile.mkdtemp(prefix="dashboard_latency_")
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, keras_lstm.LSTM(UNITS, name="lstm")(inputs))
    x = np.random.default_rng(0).uniform(size=(SEQUENCES, TIME, FEATURES))
    start = time.perf_counter()
    for step in range(args.steps):
        keras_lstm.write_gate_dashboard(
            model, x.astype("float32"), None, os.path.join(logdir, "run"), step=step
        )
    print(f"wrote {args.steps} steps in {time.perf_counter() - start:.1f} s")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir]
        + ["--host", "127.0.0.1", "--port", str(port)]
        + ["--load_fast", args.load_fast],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.PIPE,
    )
    try:
        started = time.perf_counter()
        while True:
            try:
                _, body = fetch(url + ROUTE + "runs")
                layers = json.loads(body)["runs"].get("run", {}).get("layers", {})
                if len(layers.get("lstm", {}).get("steps", [])) == min(args.steps, 10):
                    break
            except OSError:
                pass
            if time.perf_counter() - started > 300:
                raise SystemExit("TensorBoard did not list the steps in 300 s")
            time.sleep(0.5)
        print(
            f"server lists them {time.perf_counter() - started:.1f} s after start "
            f"(--load_fast {args.load_fast})"
        )
        step = max(json.loads(body)["runs"]["run"]["layers"]["lstm"]["steps"])
        where = f"run=run&layer=lstm&step={step}"
        routes = {
            "heatmap": f"heatmap?{where}&sequence=3&gate=forget_gate",
            "heatmap, other sequence and gate": f"heatmap?{where}&sequence=9"
            "&gate=cell_state",
            "unit": f"unit?{where}&sequence=3&unit=17",
            "units": f"units?{where}&gate=forget_gate",
            "saturation": f"saturation?{where}",
            "history": "history?run=run&layer=lstm&sequence=3&unit=17&gate=input_gate",
            "runs": "runs",
        }
        for name, route in routes.items():
            first, body = fetch(url + ROUTE + route)
            again, _ = fetch(url + ROUTE + route)
            print(
                f"{name:<34} first {1000 * first:6.0f} ms, again {1000 * again:6.0f} "
                f"ms, {len(body):,} bytes"
            )
    finally:
        server.stdin.close()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
