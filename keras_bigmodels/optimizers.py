"""Optimizers: Keras' own, with an opt-in fused update on torch and TensorFlow
(`FusedAdamW`)."""

import keras

from keras_bigmodels import backend


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class FusedAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with a fused update on torch and TensorFlow (explicit opt-in).

    Keras' own weight decay, clipping, EMA, gradient accumulation and variables, so
    checkpoints and `.keras` files are AdamW's; equal to `keras.optimizers.AdamW` to float32
    rounding (tests/test_optimizers.py), with one intended difference named below.

    - torch: Keras' AdamW updates with ~10 `torch._foreach_*` passes over every weight
      (several of them allocating); this applies the same formula in one fused torch kernel
      (`backend.fused_adam_step`, `torch._fused_adamw_`). Measured at the T5 benchmark's
      configuration (11M weights, 1 thread): Keras' update ~31 ms a step, this ~7 ms,
      transformers' default `torch.optim.AdamW` ~20 ms.
    - TensorFlow: Keras runs a CPU training step as a graph op by op (`jit_compile="auto"`
      is off without an accelerator), and its update is ~15 small graph ops a weight; this
      runs the weight decay and the update of all weights as one XLA-compiled function
      (`backend.fused_adamw_update`; Keras' own update under a `tf.distribute` strategy).
      T5 / BART benchmark configs, training step against this optimizer at the previous
      commit (alternating processes, 6 rounds; benchmarks/results/
      {t5,bart}_tensorflow_none_vs_0d6090f.json): 1.04x each. An embedding's gradient is
      `tf.IndexedSlices` whose ids repeat: this sums the repeated rows before Adam's second
      moment, (g1 + g2)^2, as Keras' JAX and torch updates and torch.optim.AdamW do; Keras'
      TensorFlow Adam squares each row first (g1^2 + g2^2).
    - JAX: the compiled step fuses Keras' update itself; this is AdamW.

    Args:
        as `keras.optimizers.AdamW`, without `amsgrad`.

    Example:
    >>> lm.compile(optimizer=FusedAdamW(1e-4, weight_decay=0.004))
    """

    def __init__(self, *args, amsgrad=False, **kwargs):
        if amsgrad:
            raise ValueError("`amsgrad` must be False for FusedAdamW (the fused kernel "
                             "applies plain AdamW); use keras.optimizers.AdamW(amsgrad=True).")
        super().__init__(*args, amsgrad=False, **kwargs)

    def _slots(self, trainable_variables):
        """The backend values of the weights, their momentums and their velocities."""
        index = self._get_variable_index
        return ([v.value for v in trainable_variables],
                [self._momentums[index(v)].value for v in trainable_variables],
                [self._velocities[index(v)].value for v in trainable_variables])

    def _apply_weight_decay(self, variables):
        # TensorFlow: applied inside the fused update (`_backend_update_step`), which Keras
        # calls right after this with the same variables.
        if not backend.supports_fused_adamw_update():
            super()._apply_weight_decay(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if backend.supports_fused_adamw_update():
            weights, momentums, velocities = self._slots(trainable_variables)
            decays = [self.weight_decay is not None and self._use_weight_decay(v)
                      for v in trainable_variables]
            backend.fused_adamw_update(weights, grads, momentums, velocities, decays,
                                       learning_rate, self.iterations, self.weight_decay,
                                       self.beta_1, self.beta_2, self.epsilon)
            return
        if backend.name() != "torch":
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        weights, momentums, velocities = self._slots(trainable_variables)
        backend.fused_adam_step(
            weights, list(grads), momentums, velocities, step=int(self.iterations) + 1,
            learning_rate=keras.ops.convert_to_numpy(learning_rate),
            beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
