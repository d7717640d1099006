"""Where a run trains: one device, several local devices, or several machines.

Only train.py imports this module. `make_strategy` must run before TensorFlow
initialises its devices (its first op): logical CPU devices and a multi-worker
cluster can only be configured before then.
"""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf

from keras_lstm import ArgumentError

# A collective that waits longer than this for a lost worker fails, so the
# other workers stop with an error instead of waiting forever.
COLLECTIVE_TIMEOUT_SECONDS = 120
# What a collective raises when a worker is lost: its timeout, a peer found
# down by the health check, or the collectives aborted after either.
LOST_WORKER_ERRORS = (
    tf.errors.DeadlineExceededError,
    tf.errors.UnavailableError,
    tf.errors.CancelledError,
)


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy as Keras 3.15's `fit` calls it.

    Keras reduces a (x, y) batch in one `reduce` call and scalar logs with
    `axis=0`; TensorFlow's multi-worker `reduce` takes neither, so both are
    taken apart here (Keras's single-machine path does the same).
    """

    def reduce(self, reduce_op, value, axis):
        if isinstance(value, (tuple, list)):
            return type(value)(self.reduce(reduce_op, v, axis) for v in value)
        if axis is not None:
            if self.experimental_local_results(value)[0].shape.rank == 0:
                axis = None
        return super().reduce(reduce_op, value, axis)


def describe_lost_worker(error: tf.errors.OpError) -> str:
    """One line out of the many of a failed collective: its cause."""
    lines = [line.strip() for line in (error.message or "").splitlines()]
    lines = [line for line in lines if line and line != "Graph execution error:"]
    if not lines:
        return type(error).__name__
    k = next((k for k, line in enumerate(lines) if "aborted by" in line), 0)
    cause = lines[k]
    if cause.endswith(":") and k + 1 < len(lines):
        cause += " " + lines[k + 1]  # e.g. "... unhealthy (...):" and which tasks
    cause = re.sub(r"^\{\{.*?\}\}\s*", "", cause)  # TensorFlow's node name
    return f"{type(error).__name__}: {cause}"


def cluster_spec(environ=os.environ) -> tuple[dict, str, int]:
    """The cluster, task type and index that TF_CONFIG names.

    Raises:
        ArgumentError: For `strategy`, when TF_CONFIG is missing or does not
            name this process's task among the cluster's workers.
    """
    raw = environ.get("TF_CONFIG")
    expected = (
        'a TF_CONFIG environment variable such as {"cluster": {"worker": '
        '["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
        "for multi_worker"
    )
    if not raw:
        raise ArgumentError("strategy", expected, "'multi_worker' without TF_CONFIG")
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = task["type"], task["index"]
        hosts = cluster[kind]
        valid = (
            isinstance(index, int)
            and not isinstance(index, bool)
            and kind in ("chief", "worker")
            and isinstance(hosts, list)
            and 0 <= index < len(hosts)
            and set(cluster) <= {"chief", "worker"}
            and all(isinstance(h, list) and h for h in cluster.values())
        )
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise ArgumentError("strategy", expected, f"TF_CONFIG={raw!r}")
    return cluster, kind, index


def is_chief(config) -> bool:
    """Whether this process writes the run: task 0, or the only process.

    The chief is TF_CONFIG's `chief` task, else worker 0 (TensorFlow's rule).
    """
    if config.strategy != "multi_worker":
        return True
    cluster, kind, index = cluster_spec()
    return kind == "chief" or ("chief" not in cluster and index == 0)


def make_strategy(config) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy of `config.strategy`, its devices set up.

    Raises:
        ArgumentError: For `devices` when TensorFlow's devices were initialised
            already, for `strategy` when TF_CONFIG is unusable.
    """
    if config.strategy == "none":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        if config.devices is None:
            return tf.distribute.MirroredStrategy()  # every local GPU, else the CPU
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * config.devices
            )
        except RuntimeError:
            raise ArgumentError(
                "devices",
                "a process whose TensorFlow devices are not initialised yet "
                "(run train.py in a fresh process)",
                repr(config.devices),
            ) from None
        return tf.distribute.MirroredStrategy(
            [f"/cpu:{k}" for k in range(config.devices)]
        )
    cluster_spec()
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS
    )
    return _MultiWorkerMirroredStrategy(communication_options=options)
