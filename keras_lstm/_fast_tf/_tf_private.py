"""TensorFlow's private names that the compiled loop relies on, each with a fallback.

Four questions have no public answer in TensorFlow, and the choice of loop
(`paths.choose_path`) and of gradient (`loops.chain`) depends on them: whether a
tape may record the call, whether forward-mode tangents reach it, whether the
graph being traced is compiled by XLA as a whole, and whether a tape may
differentiate the gradient again. TensorFlow answers them internally with the
names in `PRIVATE`; they are imported here and nowhere else.

A name TensorFlow has moved or removed is replaced by a conservative answer that
keeps every result right but may cost speed or memory; a `RuntimeWarning`, once
per process and name, says which name is missing and what that costs. Every
name resolving on the installed TensorFlow is tested (tests/test_tf_private.py),
so that an upgrade that moves one fails loudly there rather than only slowing
the layer down.
"""

from __future__ import annotations

import importlib
import warnings

import tensorflow as tf

# Each private name, and what running without it costs.
PRIVATE = {
    "tensorflow.python.eager.record.could_possibly_record": (
        "every call is taken to be recorded by a gradient tape, so every gradient "
        "is computed from the uncompiled loop (slow training), and larger layers "
        "keep in inference what a backward pass would need (memory)"
    ),
    "tensorflow.python.eager.forwardprop_util.pack_tangents": (
        "every call that a tape records is taken for forward-mode autodiff and "
        "runs the uncompiled loop (slow training)"
    ),
    "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext": (
        "inside a jit_compile=True function, the chunks are also compiled on "
        "their own while it is traced, in vain (wasted CPU time)"
    ),
    "tensorflow.python.ops.gradients_util.PossibleTapeGradientTypes": (
        "every graph is taken to be differentiated twice, so the compiled loop "
        "is traced anew in every trace of a train step (slower tracing)"
    ),
    "tensorflow.python.ops.gradients_util.POSSIBLE_GRADIENT_TYPES_HIGHER_ORDER": (
        "every graph is taken to be differentiated twice, so the compiled loop "
        "is traced anew in every trace of a train step (slower tracing)"
    ),
}

_warned: set[str] = set()


def resolve(name: str):
    """The private `name` (a key of `PRIVATE`), or None where the installed
    TensorFlow lacks it, after a warning, once per process and name, that says
    what its fallback costs."""
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        if name not in _warned:
            _warned.add(name)
            warnings.warn(
                f"keras_lstm: TensorFlow {tf.__version__} has no `{name}`; "
                f"without it, {PRIVATE[name]}.",
                RuntimeWarning,
                stacklevel=2,
            )
        return None


_could_possibly_record = resolve("tensorflow.python.eager.record.could_possibly_record")
_pack_tangents = resolve("tensorflow.python.eager.forwardprop_util.pack_tangents")
_in_xla_context = resolve(
    "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext"
)
_gradient_types = resolve(
    "tensorflow.python.ops.gradients_util.PossibleTapeGradientTypes"
)
_higher_order = resolve(
    "tensorflow.python.ops.gradients_util.POSSIBLE_GRADIENT_TYPES_HIGHER_ORDER"
)


if _could_possibly_record is not None:
    # What tf.custom_gradient itself asks.
    could_possibly_record = _could_possibly_record
else:

    def could_possibly_record() -> bool:
        """Whether a gradient tape or forward accumulator may record ops now."""
        return True


if _pack_tangents is not None:

    def has_tangents(tensors) -> bool:
        """Whether forward-mode accumulators may carry tangents of `tensors`: how
        tf.function itself finds them. True under any active accumulator, even
        one that watches none of `tensors` (one entry per accumulator)."""
        return bool(_pack_tangents(tensors).indices)

else:

    def has_tangents(tensors) -> bool:
        """Whether forward-mode accumulators may carry tangents of `tensors`."""
        return could_possibly_record()


if _in_xla_context is not None:

    def in_xla_computation() -> bool:
        """Whether the graph being traced is compiled by XLA as a whole
        (`jit_compile=True`)."""
        return _in_xla_context(tf.compat.v1.get_default_graph())

else:

    def in_xla_computation() -> bool:
        """Whether the graph being traced is compiled by XLA as a whole."""
        return False


if _gradient_types is not None and _higher_order is not None:

    def may_differentiate_twice(tensors) -> bool:
        """Whether a gradient of `tensors` may itself be differentiated (nested
        tapes, a tape and a forward accumulator): how tf.function itself tells."""
        return _gradient_types(tensors) == _higher_order

else:

    def may_differentiate_twice(tensors) -> bool:
        """Whether a gradient of `tensors` may itself be differentiated."""
        return True
