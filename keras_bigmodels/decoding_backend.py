"""Backend bridge of eager decoding: direct PyTorch kernels for one-token decode steps.

On the torch backend a decode loop runs eagerly (`generation.compile_function`), and at one
token per step the work per op is tiny: Keras' dispatch around an op (symbolic-input
checks, dtype promotion, conversions) costs 5-25 us, against 1-6 us for the torch call
itself. Inside `utils.eager_decoding()` on torch, the hot ops of a step -- projections,
layer norms, attention over the cache -- call torch here directly. Elsewhere
(JAX/TensorFlow, where decoding is compiled) attention uses `KerasKernels`.
This is one of the modules allowed to import a backend (see DESIGN.md).
"""

from keras import ops

_TORCH = None


class KerasKernels:
    """The `keras.ops` forms of what attention's matrix projections need (compiled decode
    steps on JAX/TensorFlow; mixed precision); torch's eager steps use `TorchKernels`."""

    @staticmethod
    def linear(x, kernel, bias=None):
        y = ops.matmul(x, kernel)
        return y if bias is None else y + bias

    @staticmethod
    def reshape(x, shape):
        return ops.reshape(x, shape)

    @staticmethod
    def split(x, sizes):
        """Split the last axis into pieces of `sizes`."""
        cuts, total = [], 0
        for size in sizes[:-1]:
            total += size
            cuts.append(total)
        return ops.split(x, cuts, axis=-1)


def _torch_kernels():
    import torch
    import torch.nn.functional as F

    class TorchKernels:
        """`KerasKernels` and the other hot ops of a decode step, calling torch directly."""

        @staticmethod
        def linear(x, kernel, bias=None):
            if bias is None:
                return torch.matmul(x, kernel)
            if x.dim() == 2:
                return torch.addmm(bias, x, kernel)
            return torch.addmm(bias, x.reshape(-1, x.shape[-1]), kernel).view(
                *x.shape[:-1], kernel.shape[-1])

        @staticmethod
        def layer_norm(x, gamma, beta, epsilon):
            return F.layer_norm(x, (x.shape[-1],), gamma, beta, epsilon)

        @staticmethod
        def reshape(x, shape):
            return x.reshape(shape)

        @staticmethod
        def split(x, sizes):
            return torch.split(x, list(sizes), dim=-1)

        @staticmethod
        def transposed_copy(x):
            # A contiguous [hidden, vocabulary] copy: a one-row product with it streams the
            # table ~3x faster than with the transposed view (measured, 2-core CPU).
            return x.t().contiguous()

        @staticmethod
        def attention(q, k, v, scale, heads_first=False):
            if not heads_first:
                k, v = k.transpose(1, 2), v.transpose(1, 2)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, scale=scale)
            return out.transpose(1, 2)

    return TorchKernels


def kernels():
    """The torch kernels (called by `utils.eager_decoding()` on the torch backend only)."""
    global _TORCH
    if _TORCH is None:
        _TORCH = _torch_kernels()
    return _TORCH
