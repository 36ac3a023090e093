"""FLOPs per sample, counted two independent ways: analytically over the Keras layers and from the TF graph.

Convention (as in the paper and the TF profiler): one multiply-add = 2 FLOPs; convolutions, transposed
convolutions, bias additions and residual additions are counted, cheap elementwise work (ReLU, batch norm,
dropout, concatenation, pooling) is not. A training step is forward + backward, where every convolution's
backward pass is two convolutions of the same size (gradient w.r.t. its input and w.r.t. its weights), i.e.
about 3x forward -- the number the paper multiplies by steps/s to report PF/s.
"""
from __future__ import annotations

import math

import keras
from keras import layers

FLOP_LAYERS = ("Conv2D", "Conv2DTranspose", "Add", "Dense", "BatchNormalization")


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape[1:])


def layer_kind(layer) -> str:
    """The Keras class a layer is counted as: the toolkit's subclasses (models.layers.DilatedConv2D,
    FusedBatchNorm) count as their Keras base, DilatedConv2D with every tap (the paper's convention counts
    them all, including those it skips because they only read padding)."""
    for base in (layers.Conv2DTranspose, layers.Conv2D, layers.Dense, layers.BatchNormalization, layers.Add):
        if isinstance(layer, base):
            return base.__name__
    return type(layer).__name__


def layer_flops(layer) -> int:
    """Forward FLOPs of one functional-model layer for a batch of one sample (0 for uncounted layers)."""
    kind = layer_kind(layer)
    if kind not in FLOP_LAYERS:
        return 0
    out = _shape(layer.output)
    out_elems = math.prod(out)
    if kind == "Add":
        return (len(layer.input) - 1) * out_elems
    if kind == "BatchNormalization":  # folded to one scale and one shift per element
        return 2 * out_elems
    inp = _shape(layer.input)
    bias = out_elems if layer.use_bias else 0
    if kind == "Dense":
        return 2 * inp[-1] * out_elems + bias
    kh, kw = layer.kernel_size
    if kind == "Conv2D":  # every output pixel: kh*kw*Cin multiply-adds per output channel
        return 2 * kh * kw * inp[-1] * out_elems + bias
    # Conv2DTranspose: every input pixel scatters kh*kw*Cout multiply-adds per input channel
    return 2 * kh * kw * inp[-1] * out[-1] * inp[0] * inp[1] + bias


def analytic_flops(model: keras.Model) -> dict:
    """{"forward", "train_step", "layers": [(name, type, output shape, params, forward FLOPs)]} per sample."""
    rows, forward, train = [], 0, 0
    for layer in model.layers:
        fl = layer_flops(layer)
        forward += fl
        kind = layer_kind(layer)
        if kind in ("Conv2D", "Conv2DTranspose", "Dense"):
            # Backward: input gradient + weight gradient, each as costly as the forward multiply-adds;
            # the bias gradient is one more pass over the output.
            train += 3 * fl
        else:
            train += 2 * fl  # Add: forward, and its gradient passes through (one more read-add)
        out_shape = tuple(layer.output.shape[1:]) if hasattr(layer, "output") else ()
        rows.append({"name": layer.name, "type": kind, "output_shape": out_shape,
                     "params": int(layer.count_params()), "forward_flops": int(fl)})
    return {"forward": int(forward), "train_step": int(train), "layers": rows}


def graph_flops(model: keras.Model, input_shape: tuple[int, int, int]) -> dict:
    """FLOPs from the traced TF graph (tf.compat.v1 profiler, float_operation) for a batch of one sample.

    The forward graph is `model(x)`; the training graph adds the gradients of a scalar loss w.r.t. all
    trainable variables (what a training step computes before the optimizer update).
    """
    import tensorflow as tf

    spec = tf.TensorSpec((1, *input_shape), tf.float32)
    variables = [v.value for v in model.trainable_variables]

    @tf.function
    def forward(x):
        return model(x, training=False)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(o) for o in tf.nest.flatten(model(x, training=True))])
        return tape.gradient(loss, variables)

    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"

    def count(fn) -> int:
        graph = fn.get_concrete_function(spec).graph
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # the v1 profiler warns about its own deprecated helpers
        try:
            return int(tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops)
        finally:
            logger.setLevel(level)

    return {"forward": count(forward), "train_step": count(train_step)}


def count_flops(model: keras.Model, input_shape: tuple[int, int, int], graph: bool = True) -> dict:
    """Per-sample FLOPs: {"forward", "train_step"} (analytic), plus the graph counts and the layer table."""
    result = analytic_flops(model)
    if graph:
        g = graph_flops(model, input_shape)
        result["graph_forward"] = g["forward"]
        result["graph_train_step"] = g["train_step"]
    return result
