"""The compiled training step: forward/backward (with gradient accumulation), loss scaling, allreduce,
optional gradient lag, LARC and the optimizer update -- one tf.function per run.

Gradient lag 1 (Kurth et al.): the step allreduces and applies the *previous* step's gradients. The allreduce
of g(t-1) has no data dependency on the forward/backward pass of step t, so Horovod's background thread can
move it while the pass computes; the update then uses w(t+1) = w(t) - lr * avg g(w(t-1)).

Resume with lag: each rank's buffer holds its own, not yet reduced gradient, so a checkpoint stores the buffers
*reduced* (`reduced_lag`, the very collective the next step would run, so bitwise the same value) and the first
step after a restore applies them without reducing again (`prereduced`). Every rank then applies exactly the
update the uninterrupted run applies, at any rank count, and the checkpoint is one model-sized array set.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from exascale_climate.train.distributed import GradientReducer, unwrap
from exascale_climate.train.precision import LossScaler

LossFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


class TrainStep:
    """`step(batches)` with `batches` a tuple of `gradient_accumulation` (x, y, w) micro-batches.

    Returns a dict of scalars: loss (this rank, mean over micro-batches), finite (the reduced gradients were
    finite), applied (an update happened), loss_scale, lr.
    """

    def __init__(self, model, optimizer, reducer: GradientReducer, scaler: LossScaler, loss_fn: LossFn,
                 *, gradient_lag: int = 0, jit_compile: bool = False, apply_updates: bool = True):
        self.model = model
        # False in hybrid mode: the step returns the group-reduced gradients ("grads") for the parameter servers
        self.apply_updates = apply_updates
        self.optimizer = optimizer
        self.reducer = reducer
        self.scaler = scaler
        self.loss_fn = loss_fn
        self.gradient_lag = gradient_lag
        self.trainable = list(model.trainable_variables)
        self.tf_trainable = unwrap(self.trainable)
        optimizer.build(self.trainable)  # variables must exist before the broadcast and outside tf.function
        if gradient_lag:
            self.lag_grads = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name="lag_grad")
                              for v in self.trainable]
            self.lag_valid = tf.Variable(False, trainable=False, name="lag_valid")
        else:
            self.lag_grads, self.lag_valid = [], None
        self.prereduced = False  # the lag buffers hold the reduced gradient (just restored from a checkpoint)
        # XLA compiles the forward+backward pass only: Horovod's collectives are not XLA ops, so the reduction,
        # loss-scale bookkeeping, LARC and the update run in the enclosing (plain) tf.function.
        self.jit_compile = bool(jit_compile)
        self._gradients = (tf.function(self.local_gradients, jit_compile=True, reduce_retracing=True)
                           if self.jit_compile else self.local_gradients)
        self._compiled = tf.function(lambda b: self._step(b, reduce_previous=True), reduce_retracing=True)
        self._compiled_prereduced = None
        self._reduce_lag = None

    # ------------------------------------------------------------------------------------------ state
    @property
    def lag_variables(self) -> list[tf.Variable]:
        return self.lag_grads + ([self.lag_valid] if self.lag_valid is not None else [])

    def __call__(self, batches):
        batches = tuple(tuple(b) for b in batches)
        if self.prereduced:  # once, after a restore: no collective inside a tf.cond, a second function instead
            if self._compiled_prereduced is None:
                self._compiled_prereduced = tf.function(lambda b: self._step(b, reduce_previous=False))
            out = self._compiled_prereduced(batches)
            self.prereduced = False
            return out
        return self._compiled(batches)

    def reduced_lag(self) -> list:
        """The lag buffers reduced over all ranks (a collective: every rank calls it), for a checkpoint."""
        if not self.gradient_lag:
            return []
        if self._reduce_lag is None:
            self._reduce_lag = tf.function(lambda: self.reducer.reduce([v.read_value() for v in self.lag_grads]))
        if self.prereduced:
            values = [v.numpy() for v in self.lag_grads]
        else:
            values = [t.numpy() for t in self._reduce_lag()]
        return values + [self.lag_valid.numpy()]

    # ------------------------------------------------------------------------------------------ graph
    def local_gradients(self, batches):
        """Mean loss and unscaled float32 gradients of this rank over its micro-batches."""
        n = len(batches)
        total_loss = tf.constant(0.0, tf.float32)
        summed = None
        for x, y, w in batches:
            with tf.GradientTape() as tape:
                logits = self.model(x, training=True)
                loss = tf.cast(self.loss_fn(y, logits, w), tf.float32)
                if self.model.losses:
                    loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in self.model.losses])
                scaled = self.scaler.scale_loss(loss)
            grads = tape.gradient(scaled, self.tf_trainable)
            grads = [tf.zeros(v.shape, tf.float32) if g is None else tf.cast(g, tf.float32)
                     for g, v in zip(grads, self.trainable)]
            grads = self.scaler.unscale(grads)
            summed = grads if summed is None else [a + g for a, g in zip(summed, grads)]
            total_loss += loss
        if n > 1:
            summed = [g / float(n) for g in summed]
        return total_loss / float(n), summed

    def _apply(self, grads):
        # tf.identity makes the gradients tensors of this cond branch's graph: Keras' replica all_reduce (a
        # custom_gradient) refuses inputs captured from the outer graph.
        self.optimizer.apply_gradients(zip([tf.identity(tf.cast(g, v.dtype)) for g, v in zip(grads, self.trainable)],
                                           self.trainable))
        return tf.constant(True)

    def _step(self, batches, reduce_previous: bool = True):
        loss, grads = self._gradients(batches)
        if self.gradient_lag:
            previous = [v.read_value() for v in self.lag_grads]
            has_previous = self.lag_valid.read_value()
            # independent of this step's forward/backward; already reduced right after a restore
            reduced = self.reducer.reduce(previous) if reduce_previous else previous
            finite = self.scaler.all_finite(reduced)
            do_apply = tf.logical_and(finite, has_previous)
            with tf.control_dependencies(grads):  # the pass read w(t) before the update writes w(t+1)
                applied = tf.cond(do_apply, lambda: self._apply(reduced), lambda: tf.constant(False)) \
                    if self.apply_updates else tf.identity(do_apply)
                tf.cond(has_previous, lambda: self.scaler.update(finite), lambda: tf.constant(0))
            with tf.control_dependencies([applied]):
                for buf, g in zip(self.lag_grads, grads):
                    buf.assign(g)
                self.lag_valid.assign(True)
        else:
            reduced = self.reducer.reduce(grads)
            finite = self.scaler.all_finite(reduced)
            applied = tf.cond(finite, lambda: self._apply(reduced), lambda: tf.constant(False)) \
                if self.apply_updates else tf.identity(finite)
            self.scaler.update(finite)
        out = {"loss": loss, "finite": finite, "applied": applied, "loss_scale": self.scaler.scale.read_value(),
               "lr": tf.cast(self.optimizer.learning_rate, tf.float32)}
        if not self.apply_updates:
            out["grads"] = list(reduced)
        return out


def resolve_jit_compile(setting) -> bool:
    """`train.jit_compile`: True/False as given; "auto" = XLA only where a GPU is visible. On CPU hosts
    TensorFlow's XLA convolutions (Eigen) measured 1.25-4.5x slower per training step than the oneDNN kernels the
    graph runs (docs/PERFORMANCE.md, "The training step on CPUs"); on GPUs XLA is TensorFlow's usual choice."""
    if setting == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(setting)


def make_eval_step(model, num_classes: int):
    """A compiled step returning this batch's confusion matrix (rows = truth), summable across ranks."""
    from exascale_climate.train.metrics import confusion_matrix

    @tf.function(reduce_retracing=True)
    def eval_step(x, y):
        logits = model(x, training=False)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return confusion_matrix(y, predictions, num_classes)

    return eval_step
