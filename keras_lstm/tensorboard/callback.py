"""A Keras callback that puts every gate of every LSTM layer in TensorBoard."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np

from keras_lstm import _checks
from keras_lstm.cell import GATES
from keras_lstm.gates import (
    LEFT_SATURATED,
    RIGHT_SATURATED,
    SIGMOID_GATES,
    GateReader,
    saturation,
    unmasked_values,
)
from keras_lstm.tensorboard import palette, summary
from keras_lstm.tensorboard.summary import check_labels, dashboard_labels

# "i_t: how much of the candidate enters the cell (0 closed, 1 open)", ...
DESCRIPTIONS = {
    gate: f"{palette.SYMBOLS[gate]}_t: {palette.DESCRIPTIONS[gate]}" for gate in GATES
}
LEFT, RIGHT = f"{LEFT_SATURATED:g}", f"{RIGHT_SATURATED:g}"


class GateTensorBoard(keras.callbacks.Callback):
    """Writes what every gate did on a fixed probe batch, every `freq` epochs.

    For each LSTM layer of the model (keys as in
    `keras_lstm.gate_activations`) and each gate (`input_gate`, `forget_gate`,
    `output_gate`, `candidate`, `cell_state`, `hidden_state`), under the tag
    prefix `<layer>/<gate>/` of the TensorBoard run `log_dir`:

    - `activations`: histogram of the values at unmasked steps;
    - `mean`, and for the three gates `left_saturated` and `right_saturated`:
      scalars, the fractions of values below 0.1 and above 0.9;
    - `heatmap`: image, units by time, of the first probe sequence, with its
      inputs (`step_labels`) along the time axis;
    - `saturation`: image (gates only), each unit's fraction of time left-
      against right-saturated (Karpathy, Johnson and Fei-Fei 2015).

    and, for the "LSTM gates" dashboard (`dashboard=True`), the data
    `keras_lstm.write_gate_dashboard` writes: every gate at every step of every
    probe sequence (float16), the mask, and the `labels`.

    TensorBoard's tag filter `forget_gate` then shows every forget gate. The
    step of a summary is the epoch as `keras.callbacks.TensorBoard` numbers it
    (from 0), so the gates sit beside the loss of the same epoch. A model
    without LSTM layers is refused when training starts.

    Args:
        log_dir: Directory of the TensorBoard run to write, e.g.
            `logs/my_run/gates`.
        inputs: The probe batch, as the model is called, e.g. `x_val[:32]`.
        mask: Optional boolean `(batch, time)` mask for the probe batch.
        freq: Write after every `freq`-th epoch (and after the last). Positive.
        step_labels: Labels of the first probe sequence only, for the heatmap
            images (the dashboard then shows the inputs' values). Kept for
            code written before `labels`; pass one of the two.
        images: Whether to draw the images.
        labels: What each probe input step was: a `(batch, time)` array or
            nested list of strings, one per step of every probe sequence (e.g.
            the characters of a text). The dashboard shows them along its time
            axis, the heatmap images those of the first sequence. None: the
            dashboard shows the inputs' values (see
            `keras_lstm.write_gate_dashboard`).
        dashboard: Whether to write the data of the "LSTM gates" dashboard.
        targets: Optional targets of the probe batch, as the model's loss
            takes them. With them, the dashboard shows under each sequence the
            target, the model's prediction and its loss, and, for a compiled
            model where `removals`, each unit's loss change when removed
            (`keras_lstm.ablate`, one batched pass of every unit per layer).
            Not with `mask`.
        target_names: Optional names of the classes (e.g. a vocabulary),
            shown for class ids.
        removals: Whether to measure each unit's removal (with `targets`).
    """

    def __init__(
        self,
        log_dir: str,
        inputs,
        mask=None,
        freq: int = 1,
        step_labels: Sequence[str] | None = None,
        images: bool = True,
        labels: Sequence[Sequence[str]] | np.ndarray | None = None,
        dashboard: bool = True,
        targets=None,
        target_names: Sequence[str] | None = None,
        removals: bool = True,
    ):
        super().__init__()
        freq = _checks.positive_int("freq", freq)
        summary.check_targets(targets, mask)
        if labels is not None and step_labels is not None:
            raise _checks.ArgumentError(
                "step_labels",
                "None when `labels` is given (labels[0] labels the heatmap images)",
                repr(step_labels),
            )
        # An empty probe would train the first epoch and then have no gates.
        size = _checks.samples("inputs", inputs)
        self.log_dir = os.fspath(log_dir)
        self.inputs = inputs
        self.mask = mask
        self.freq = freq
        # Checked here against the probe's size; against the gates' time when
        # they are first computed.
        self.labels = None if labels is None else check_labels(labels, size)
        if step_labels is None and self.labels is not None:
            step_labels = self.labels[0]
        self.step_labels = None if step_labels is None else list(step_labels)
        self.images = images
        self.dashboard = dashboard
        self.targets = targets
        self.target_names = target_names
        self.removals = removals
        self._dashboard_labels = None
        self._probe_written = False
        self._writer = None
        self._reader = None
        self._epoch = None
        self._last_written = None

    def set_model(self, model):
        super().set_model(model)
        self._reader = None

    def on_train_begin(self, logs=None):
        # Fails here, before the first epoch, for a model without LSTM layers.
        self._reader = GateReader(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if not finite_logs(logs):
            return  # A diverged model (TerminateOnNaN) has no gates worth drawing.
        self._epoch = epoch
        if (epoch + 1) % self.freq == 0:
            self.write(epoch)

    def on_train_end(self, logs=None):
        if self._epoch is not None and finite_logs(logs):
            self.write(self._epoch)
        self.close()

    def write(self, step: int) -> None:
        """Runs the probe batch and writes every gate summary at `step`."""
        import tensorflow as tf

        if self._last_written == step:
            return
        if self._reader is None:
            self._reader = GateReader(self.model)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        # The reader keeps the probe's compiled forward pass from write to write.
        gates = self._reader(self.inputs, mask=self.mask)
        if self.dashboard and self._dashboard_labels is None:
            self._dashboard_labels = dashboard_labels(gates, self.labels, self.inputs)
        with self._writer.as_default(step=step):
            for layer, values in gates.items():
                write_gate_statistics(layer, values)
                if self.images:
                    write_gate_images(layer, values, self.step_labels)
            if self.dashboard:
                summary.write_all(gates, self._dashboard_labels)
                if self.targets is not None:
                    summary.write_annotations(
                        self.model,
                        self.inputs,
                        self.targets,
                        self.target_names,
                        gates,
                        removals=self.removals,
                        probe=not self._probe_written,
                    )
                    self._probe_written = True
        self._writer.flush()
        self._last_written = step

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_gate_statistics(layer: str, gates: dict[str, np.ndarray]) -> None:
    """Writes one layer's gate histograms and scalars to the default writer."""
    import tensorflow as tf

    for gate in GATES:
        tag = f"{layer}/{gate}"
        values = unmasked_values(gates, gate)
        about = DESCRIPTIONS[gate]
        _write_histogram(f"{tag}/activations", values, f"{about}; unmasked steps")
        mean = float(np.mean(values)) if values.size else 0.0
        tf.summary.scalar(f"{tag}/mean", mean, description=f"Mean of {about}")
        if gate in SIGMOID_GATES:
            left, right = saturation(gates, gate)
            tf.summary.scalar(
                f"{tag}/left_saturated",
                float(np.mean(left)),
                description=f"Fraction of {gate} values below {LEFT} (closed)",
            )
            tf.summary.scalar(
                f"{tag}/right_saturated",
                float(np.mean(right)),
                description=f"Fraction of {gate} values above {RIGHT} (open)",
            )


def write_gate_images(
    layer: str, gates: dict[str, np.ndarray], step_labels: Sequence[str] | None = None
) -> None:
    """Writes one layer's gate heatmaps and saturation plots to the default writer."""
    from keras_lstm.tensorboard import plots

    for gate in GATES:
        tag = f"{layer}/{gate}"
        png = plots.heatmap_png(
            gates[gate][0], gates["mask"][0], gate, layer, step_labels
        )
        about = f"{DESCRIPTIONS[gate]}: units by time, first probe sequence"
        _write_png(f"{tag}/heatmap", png, about)
        if gate in SIGMOID_GATES:
            png = plots.saturation_png(*saturation(gates, gate), gate, layer)
            about = (
                f"Per unit: fraction of steps {gate} is left-saturated "
                f"(<{LEFT}) against right-saturated (>{RIGHT})"
            )
            _write_png(f"{tag}/saturation", png, about)


# Histograms and images are computed here with NumPy and Pillow and written in
# TensorBoard's storage format with one op each: tf.summary.histogram and
# tf.summary.image would run a dozen eager ops per summary (and re-encode PNGs).
_HISTOGRAM_BUCKETS = 30


def _write_histogram(tag: str, values: np.ndarray, description: str) -> None:
    import tensorflow as tf
    from tensorboard.plugins.histogram import metadata

    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        buckets = np.zeros((_HISTOGRAM_BUCKETS, 3))
    else:
        counts, edges = np.histogram(values, bins=_HISTOGRAM_BUCKETS)
        buckets = np.stack([edges[:-1], edges[1:], counts], axis=1)
    tf.summary.write(
        tag,
        tf.constant(buckets, dtype=tf.float64),
        metadata=metadata.create_summary_metadata(tag, description),
    )


def _write_png(tag: str, png: bytes, description: str) -> None:
    import tensorflow as tf
    from tensorboard.plugins.image import metadata

    width, height = _png_size(png)
    tf.summary.write(
        tag,
        tf.constant([str(width), str(height), png]),
        metadata=metadata.create_summary_metadata(tag, description),
    )


def _png_size(png: bytes) -> tuple[int, int]:
    # The IHDR chunk: width and height are big-endian at bytes 16-24.
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def finite_logs(logs) -> bool:
    """Whether every value of an epoch's `logs` is finite (no diverged loss)."""
    return all(np.isfinite(float(v)) for v in (logs or {}).values())
