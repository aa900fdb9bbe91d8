"""JAX halves of the backend boundary: compiled decode functions, training-step hints, CPU
runtime settings and the UNet's conv kernel (ImageOps)."""

import functools

import jax
import jax.numpy as jnp
import keras


def compile_function(fn, variables, jit_compile=True):
    if not jit_compile:
        return fn

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)
    return lambda *args: jitted([v.value for v in variables], *args)


def materialize(x):
    """An optimization barrier. XLA folds a transpose into the matmul that reads it, and
    XLA:CPU then runs that matmul (contracting over its operand's rows, as a weight gradient
    x^T g does) on a generic path at ~125-150 GFLOP/s instead of its packed kernels at ~200;
    copying the small transposed operand first is cheaper than the difference (a
    [512, 256] x [512, 8192] weight gradient 14.5 -> 11.6 ms on 2 cores)."""
    return jax.lax.optimization_barrier(x)


def run_cpu_on_caller():
    """Run CPU computations on the calling thread (no async dispatch), so their buffers come
    from the main thread's glibc heap, which `runtime.tune_cpu()` lets the process keep."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def cpu_async_dispatch():
    return bool(jax.config.read("jax_cpu_enable_async_dispatch"))


def _conv(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(p, p) for p in padding],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_kernel_gradient(x, g, kernel_shape, padding):
    """The kernel gradient of a stride-1 NHWC conv as kh * kw matmuls over the batch's
    pixels, no patches copied: with x zero-padded and flattened to rows [b*hp*wp, in] and g
    placed at the top-left of the same padded grid (zeros elsewhere), tap (i, j) is
    rows[off:off + n]^T @ g_rows[:n] with off = i*wp + j, since row r + off is pixel
    (h + i, w + j) of row r's image wherever g is nonzero."""
    kh, kw, channels, filters = kernel_shape
    ph, pw = padding
    hp, wp = x.shape[1] + 2 * ph, x.shape[2] + 2 * pw
    rows = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))).reshape(-1, channels)
    n = rows.shape[0] - (kh - 1) * wp - (kw - 1)
    g_rows = jnp.pad(g, ((0, 0), (0, hp - g.shape[1]), (0, wp - g.shape[2]), (0, 0)))
    g_rows = g_rows.reshape(-1, filters)[:n]
    taps = [jax.lax.dot_general(rows[i * wp + j:i * wp + j + n], g_rows, (((0,), (0,)), ((), ())))
            for i in range(kh) for j in range(kw)]
    return jnp.stack(taps).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_stride1(x, kernel, padding):
    """A stride-1 NHWC conv (symmetric `padding` per spatial axis) equal to
    `jax.lax.conv_general_dilated`, whose kernel gradient is `conv_kernel_gradient`."""
    return _conv(x, kernel, padding)


def _conv2d_stride1_forward(x, kernel, padding):
    return _conv(x, kernel, padding), (x, kernel)


def _conv2d_stride1_backward(padding, residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda inputs: _conv(inputs, kernel, padding), x)
    (dx,) = input_vjp(g)
    return dx, conv_kernel_gradient(x, g, kernel.shape, padding).astype(kernel.dtype)


conv2d_stride1.defvjp(_conv2d_stride1_forward, _conv2d_stride1_backward)


class ImageOps:
    """channels_last image kernels on JAX (`backend.image_kernels()`): `conv2d` only;
    `group_norm` and `attention` are None (the Keras forms compile as well through XLA).

    Why: XLA:CPU differentiates an NHWC conv's kernel as a convolution with the batch as
    the feature axis and a window as large as the image (dim_labels b01f_01io->b01f, e.g.
    a [in, 3, 3, out] output from a 32x32 window over 16 features), which its conv
    library (YNNPACK) runs far below its matmul speed. A jax.profiler trace of the
    bench_diffusion training step (UNet 64/128 channels, 32x32, batch 16; one thread)
    put these kernel gradients at 64% of the step, the forward and input-gradient convs
    at 14%, dots 7%, transposes 5%, elementwise 4.5%, reductions (group norm, loss) 3.6%.
    `conv2d_stride1` keeps XLA's forward and input gradient and computes the kernel
    gradient as matmuls (`conv_kernel_gradient`): 3x3 64->64 at 32x32 batch 16, 1 thread,
    ~89 ms vs 137-370 ms for XLA's form (shared machine). Whole training step of that
    bench (train_on_batch, CPU time, 5 alternating rounds in one process, loaded
    machine): 8.7 s -> 6.3 s median (per-round ratio 0.59-0.92, median 0.75); the
    sampling step (forward only, same HLO) is unchanged (ratio median 1.02). Strided
    convs take the plain lax conv. Equivalence (outputs and gradients):
    tests/layers/test_unet_kernels.py.
    """

    group_norm = None
    attention = None

    # Where the matmul kernel gradient beats XLA's: images of at least this many pixels
    # and convs with at least this many input x output channels.
    min_pixels = 32 * 32
    min_channel_product = 128 * 128

    @staticmethod
    def matmul_kernel_gradient_pays(x_shape, kernel_shape):
        """Whether `conv_kernel_gradient` beats XLA's own kernel gradient for a stride-1
        conv of `x_shape` [b, h, w, in] with `kernel_shape` [kh, kw, in, out].

        XLA's window is the whole image, so it slows with the image; the matmuls pay for
        their shifted copies of x, so they lose on small images and few channels. Measured
        (2 cores, batch 16, 3x3 kernels, ms for XLA's form / the matmuls): 32x32 128->128
        103-145 / 72-74, 64x64 (batch 4) 128->128 117 / 69; at parity 32x32 64->64 38-40 /
        38-51 and 64->128 45 / 44; XLA ahead on 16x16 128->128 8-11 / 14-28, 16x16 256->128
        17 / 64, 32x32 64->3 3.3 / 30 and 3->64 2.0 / 3.7.
        """
        if x_shape[1] is None or x_shape[2] is None:
            return False
        pixels = x_shape[1] * x_shape[2]
        channels = kernel_shape[2] * kernel_shape[3]
        return (pixels >= ImageOps.min_pixels
                and channels >= ImageOps.min_channel_product)

    @staticmethod
    def conv2d(x, kernel, bias, strides, padding):
        """x [b, h, w, in], kernel [kh, kw, in, out], symmetric int `padding` per spatial
        axis -> [b, h', w', out], as `keras.ops.conv` plus the bias."""
        if tuple(strides) == (1, 1) and ImageOps.matmul_kernel_gradient_pays(x.shape,
                                                                              kernel.shape):
            out = conv2d_stride1(x, kernel, tuple(int(p) for p in padding))
        else:
            out = jax.lax.conv_general_dilated(x, kernel, tuple(strides),
                                               [(p, p) for p in padding],
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out if bias is None else out + bias
