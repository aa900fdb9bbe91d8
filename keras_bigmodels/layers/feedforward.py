"""Position-wise feed-forward networks: dense MLP and gated (GEGLU / SwiGLU) variants."""

import keras
from keras import ops

from keras_bigmodels import backend
from keras_bigmodels.backend.decoding import active as in_eager_decoding
from keras_bigmodels.backend.decoding import invoke, memo, op_kernels
from keras_bigmodels.utils import check_positive_int

ACTIVATIONS = ("relu", "gelu", "gelu_approximate", "quick_gelu", "silu", "swish", "tanh")


def _gelu_erf(x):
    # Exact GELU through erf: JAX's own exact gelu goes through erfc, which XLA CPU
    # evaluates ~3x slower than erf (BERT's feed-forward activation, measured); same values
    # to float32 rounding.
    return 0.5 * x * (1.0 + ops.erf(x * ops.cast(0.7071067811865476, x.dtype)))


def get_activation(name):
    """The activation function for a name used in configs (HF's gelu_new is gelu_approximate)."""
    if name == "gelu_approximate":
        return lambda x: ops.gelu(x, approximate=True)
    if name == "gelu":
        if backend.prefers_erf_gelu():
            return _gelu_erf
        return lambda x: ops.gelu(x, approximate=False)
    if name == "quick_gelu":
        # OpenAI CLIP's GELU approximation x * sigmoid(1.702 x); its checkpoints were
        # trained with it, so the exact GELU would shift their outputs.
        return lambda x: x * ops.sigmoid(ops.cast(1.702, x.dtype) * x)
    if name in ("silu", "swish"):
        return ops.silu
    if name == "relu":
        return ops.relu
    if name == "tanh":
        return ops.tanh
    raise ValueError(f"`activation` must be one of {', '.join(ACTIVATIONS)}; received {name!r}.")


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class FeedForward(keras.layers.Layer):
    """FFN(x) = W_out act(W_in x) or, gated, W_out (act(W_gate x) * W_in x).

    Sub-layers are named `intermediate`, `intermediate_gate` and `output` so that one
    layout map shards the intermediate axis.

    Args:
        intermediate_dim: width of the hidden layer.
        activation: one of relu, gelu, gelu_approximate, quick_gelu (CLIP), silu, tanh.
        gated: GLU variant (T5 v1.1's gated-GELU, LLaMA's SwiGLU).
        use_bias: whether the dense layers have biases.
        dropout: dropout after the activation.
        output_dim: defaults to the input's last dimension.

    Example:
    >>> FeedForward(64)(keras.ops.zeros((2, 3, 16))).shape
    (2, 3, 16)
    """

    def __init__(self, intermediate_dim, activation="gelu", gated=False, use_bias=True,
                 dropout=0.0, output_dim=None, kernel_initializer="glorot_uniform",
                 output_kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("intermediate_dim", intermediate_dim)
        get_activation(activation)
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.gated = gated
        self.use_bias = use_bias
        self.dropout = dropout
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer or kernel_initializer
        )

    def _dense(self, units, name, initializer):
        return keras.layers.Dense(units, use_bias=self.use_bias, kernel_initializer=initializer,
                                  dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        self._activation_fn = get_activation(self.activation)
        self.intermediate = self._dense(self.intermediate_dim, "intermediate",
                                        self.kernel_initializer)
        self.intermediate.build(input_shape)
        if self.gated:
            self.intermediate_gate = self._dense(self.intermediate_dim, "intermediate_gate",
                                                 self.kernel_initializer)
            self.intermediate_gate.build(input_shape)
        self.output_dense = self._dense(self.output_dim or input_shape[-1], "output",
                                        self.output_kernel_initializer)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, inputs, training=None):
        shape = tuple(inputs.shape)
        if (len(shape) > 2 and all(isinstance(n, int) for n in shape[1:])
                and not in_eager_decoding()):
            # [batch, ..., d] as one [rows, d] matrix: the weight gradients are then plain
            # x^T g products; from the 3-D form, XLA:CPU contracts over two axes on a
            # slower path (a small GPT's step ~5% faster on JAX, same elsewhere). Not in
            # eager decoding: no gradients there, and two Keras reshapes cost ~40 us a
            # layer per token.
            out = self._mlp(ops.reshape(inputs, (-1, shape[-1])), training)
            return ops.reshape(out, (-1,) + shape[1:-1] + (out.shape[-1],))
        return self._mlp(inputs, training)

    def _mlp(self, inputs, training):
        kernels = op_kernels()
        activation = self._activation_fn
        if kernels is not None:  # eager: the backend's own form, chosen once per block
            activation = memo((id(self), "activation"), lambda: (
                self.compute_dtype == self.variable_dtype
                and kernels.activation(self.activation)) or self._activation_fn)
        if self.gated:
            hidden = (activation(invoke(self.intermediate_gate, inputs))
                      * invoke(self.intermediate, inputs))
        else:
            hidden = activation(invoke(self.intermediate, inputs))
        hidden = invoke(self.dropout_layer, hidden, training=training)
        return invoke(self.output_dense, hidden)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            gated=self.gated,
            use_bias=self.use_bias,
            dropout=self.dropout,
            output_dim=self.output_dim,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            output_kernel_initializer=keras.initializers.serialize(self.output_kernel_initializer),
        )
        return config
