"""Text sampled from a character model while it trains, in TensorBoard.

A language model's loss says how well it predicts; a few lines of its own
text say what it has learned (words, spacing, punctuation) at each epoch.
"""

from __future__ import annotations

import os

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
