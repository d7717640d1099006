"""What train.py reports beyond the gates: text samples, HParams, final metrics."""

from __future__ import annotations

import os
import sys

import keras
import numpy as np

from keras_lstm.tensorboard.callback import finite_logs


class TextSamples(keras.callbacks.Callback):
    """Writes text sampled from a character model to TensorBoard's text dashboard.

    Each prompt (a one-hot window of the validation text) is continued
    `length` characters, one at a time, drawing from the model's softmax at the
    last step with `temperature`.

    Args:
        log_dir: Directory of the TensorBoard run to write.
        prompts: One-hot windows `(n, time, vocab)`.
        decode: Maps an array of character ids to a string.
        length: Characters to sample after each prompt.
        freq: Write every `freq` epochs.
        temperature: Softmax temperature; lower is more conservative.
        seed: Seed of the sampling.
    """

    def __init__(
        self,
        log_dir,
        prompts,
        decode,
        length=160,
        freq=1,
        temperature=0.7,
        seed=0,
    ):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.prompts = np.asarray(prompts, dtype="float32")
        self.decode = decode
        self.length = length
        self.freq = freq
        self.temperature = temperature
        self.seed = seed
        self._writer = None

    def sample(self) -> list[tuple[str, str]]:
        """`(prompt, continuation)` for each prompt."""
        rng = np.random.default_rng(self.seed)
        window = self.prompts.copy()
        vocab = window.shape[-1]
        drawn = []
        for _ in range(self.length):
            logits = np.asarray(self.model.predict_on_batch(window))[:, -1]
            logits = logits.astype("float64") / self.temperature
            probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            ids = np.array([rng.choice(vocab, p=p) for p in probs])
            drawn.append(ids)
            window = np.concatenate(
                [window[:, 1:], np.eye(vocab)[ids][:, None]], axis=1
            )
        drawn = np.stack(drawn, axis=1)
        prompts = np.argmax(self.prompts, axis=-1)
        return [
            (self.decode(p), self.decode(d))
            for p, d in zip(prompts, drawn, strict=True)
        ]

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq or not finite_logs(logs):
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        lines = [
            f"**…{_markdown(prompt[-60:])}** {_markdown(text)}"
            for prompt, text in self.sample()
        ]
        # At Keras's own step for the epoch (epoch_loss, the gates): 0 for the first.
        with self._writer.as_default(step=epoch):
            tf.summary.text(
                "samples/text",
                "\n\n".join(lines),
                description="Text sampled from the model (bold: the prompt's end)",
            )
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _markdown(text: str) -> str:
    for char in "\\`*_[]#<>":
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ⏎ ")


HPARAMS_METRICS = (
    "val_loss",
    "baseline_val_loss",
    "val_accuracy",
    "baseline_accuracy",
    "val_bits_per_char",
    "baseline_bits_per_char",
    "epochs_run",
    "wall_seconds",
)


def write_hparams(
    run_dir: str,
    hparams: dict,
    trial_id: str,
    choices: dict[str, tuple[str, ...]],
    shown: tuple[str, ...] = (),
) -> None:
    """Records a run's hyperparameters for TensorBoard's HParams dashboard.

    Args:
        run_dir: Directory of the TensorBoard run to write.
        hparams: Name -> value: a string, a bool, or a number that is not
            negative (a size, a seed, a rate).
        trial_id: The run's name in the dashboard.
        choices: Name -> every value of each string hparam.
        shown: Names of the hparams the dashboard shows before the others.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.hparams import plugin_data_pb2

    # The same experiment in every run (TensorBoard reads one, whichever it finds
    # first): the run settings, and as metrics the final results beside their
    # baselines rather than every scalar of the run.
    metrics = [
        hp.Metric(f"final/{name}", display_name=name) for name in HPARAMS_METRICS
    ]
    metrics += [
        hp.Metric("epoch_loss", group="validation", display_name="val_loss per epoch"),
        hp.Metric("epoch_loss", group="train", display_name="loss per epoch"),
    ]
    declared = [
        hp.HParam(name, _domain(hp, name, value, choices))
        for name, value in hparams.items()
    ]
    config = hp.hparams_config_pb(hparams=declared, metrics=metrics)
    # The dashboard shows five hparams until the user picks others: those
    # marked `differs` first, then by name. TensorBoard computes `differs` from
    # the runs' values only where no run wrote an experiment; a written one is
    # read as it is, so `shown` is marked here.
    (value,) = config.value
    data = plugin_data_pb2.HParamsPluginData.FromString(
        value.metadata.plugin_data.content
    )
    for info in data.experiment.hparam_infos:
        info.differs = info.name in shown
    value.metadata.plugin_data.content = data.SerializeToString()
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(config.SerializeToString(), step=0)
        hp.hparams(hparams, trial_id=trial_id)
    writer.close()


def _domain(hp, name: str, value, choices: dict):
    """The values of an hparam in any run, not only this one's."""
    if isinstance(value, bool):
        return hp.Discrete([False, True])
    if isinstance(value, str):
        return hp.Discrete(list(choices[name]))
    if value < 0:
        raise ValueError(
            f"Received an invalid value for hparam `{name}`: expected a number "
            f"that is not negative, got {value!r}"
        )
    if isinstance(value, int):
        # TensorBoard keeps every number as a float64, exact up to 2**53.
        return hp.IntInterval(0, 2**53)
    return hp.RealInterval(0.0, sys.float_info.max)


def write_final_metrics(run_dir: str, metrics: dict, step: int) -> None:
    """Writes a run's final metrics and baselines as scalars beside its hparams."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default(step=step):
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(
                    f"final/{name}",
                    float(value),
                    description=f"{name} at the end of the run (best epoch)",
                )
    writer.close()
