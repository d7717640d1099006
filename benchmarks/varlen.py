"""Variable-length workloads: keras_lstm against keras.layers.LSTM, cold starts too.

Text model: `Embedding(50, 16, mask_zero=True) -> LSTM(32) -> Dense(1)`, Adam, MSE,
on 640 sequences of 5 to 120 tokens, sorted by length and `padded_batch(16)`:
40 batches of 40 different lengths, shuffled. Each layer runs in a fresh process,
which times its first epoch (tracing and compilation included), its second epoch
and a `predict` over the same batches.

Serving: the same model, trained for one batch, saved with `model.export()`, is
loaded with `tf.saved_model.load` in a fresh process and called on one sequence
at a time at 6 lengths it has not seen; the table gives the first call's time
at each length. "A batch size not seen yet" times `train_on_batch` and
`predict_on_batch` on 5 sequences after the epochs: the first call pays what a new
shape costs (tracing, compilation), the second does not.

    python benchmarks/varlen.py
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEQUENCES, BATCH, VOCAB = 640, 16, 50
SERVE_LENGTHS = (5, 6, 7, 30, 77, 120)


def dataset(seed=0):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(5, 121, size=SEQUENCES))
    tokens = [rng.integers(1, VOCAB, size=n) for n in lengths]
    targets = np.array([t.mean() / VOCAB for t in tokens], dtype="float32")
    ds = tf.data.Dataset.from_generator(
        lambda: zip(tokens, targets, strict=True),
        output_signature=(
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.float32),
        ),
    )
    batches = ds.padded_batch(BATCH).cache()
    return batches.shuffle(SEQUENCES // BATCH, seed=seed)


def build_model(which):
    import keras

    if which == "keras":
        layer = keras.layers.LSTM(32)
    else:
        import keras_lstm

        layer = keras_lstm.LSTM(32)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 16, mask_zero=True),
            layer,
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def child_fit(which):
    ds = dataset()
    model = build_model(which)
    times = {}
    for name in ("first_epoch", "second_epoch"):
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        times[name] = time.perf_counter() - start
    start = time.perf_counter()
    model.predict(ds.map(lambda x, y: x), verbose=0)
    times["predict"] = time.perf_counter() - start
    # A batch size not seen yet (5 sequences of 50 tokens), first call then second.
    import numpy as np

    x = np.random.default_rng(2).integers(1, VOCAB, size=(5, 50))
    for name, call in (
        ("new_batch_train", lambda: model.train_on_batch(x, np.zeros((5, 1)))),
        ("new_batch_predict", lambda: model.predict_on_batch(x)),
    ):
        for suffix in ("", "_again"):
            start = time.perf_counter()
            call()
            times[name + suffix] = time.perf_counter() - start
    return times


def child_export(which, path):
    import numpy as np

    model = build_model(which)
    x = np.random.default_rng(0).integers(1, VOCAB, size=(BATCH, 10))
    model.fit(x, np.zeros((BATCH, 1)), verbose=0)
    model.export(path, verbose=False)
    return {}


def child_serve(path):
    import numpy as np
    import tensorflow as tf

    served = tf.saved_model.load(path)
    rng = np.random.default_rng(1)
    times = {}
    for length in SERVE_LENGTHS:
        x = tf.constant(rng.integers(1, VOCAB, size=(1, length)), tf.int32)
        start = time.perf_counter()
        served.serve(x).numpy()
        times[f"T={length}"] = time.perf_counter() - start
    return times


def _in_child(*args):
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes each")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        result = {"fit": child_fit, "export": child_export, "serve": child_serve}[mode](
            *rest
        )
        print(json.dumps(result))
        return

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench import machine_description

    print(machine_description())
    print(f"{SEQUENCES} sequences of 5-120 tokens, padded_batch({BATCH}), ", end="")
    print(f"{args.repeats} fresh process(es) per layer, medians\n")
    import statistics

    fits = {"keras": [], "ours": []}
    serves = {"keras": [], "ours": []}
    for _ in range(args.repeats):
        for which in fits:
            fits[which].append(_in_child("fit", which))
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model")
                _in_child("export", which, path)
                serves[which].append(_in_child("serve", path))

    def row(name, results):
        k = statistics.median(r[name] for r in results["keras"])
        o = statistics.median(r[name] for r in results["ours"])
        print(f"{name:>14} {k:>9.3f} {o:>9.3f} {o / k:>10.2f}")

    print(f"{'seconds':>14} {'keras':>9} {'ours':>9} {'ours/keras':>10}")
    for name in ("first_epoch", "second_epoch", "predict"):
        row(name, fits)
    print("\na batch size not seen yet (5 x 50), first call and second call")
    for name in ("new_batch_train", "new_batch_predict"):
        row(name, fits)
        row(name + "_again", fits)
    print("\nserving, batch 1, first call at each new length (exported model)")
    for name in serves["keras"][0]:
        row(name, serves)
    total = {
        which: [{"total": sum(r.values())} for r in results]
        for which, results in serves.items()
    }
    row("total", total)


if __name__ == "__main__":
    main()
