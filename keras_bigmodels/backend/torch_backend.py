"""PyTorch halves of the backend boundary: the eager decode loop with its registered
kernels (see `decoding`), channels_last image kernels (`ImageOps`), legacy checkpoint
reading, and DistributedDataParallel."""

import keras
import torch
import torch.nn.functional as F

from keras_bigmodels.backend.decoding import eager_decoding, memo, register_kernel


def compile_function(fn, variables, jit_compile=True):
    def no_grad(*args):
        with torch.no_grad(), eager_decoding():
            return fn(*args)

    return no_grad


class TorchOps:
    """The op kernels of `decoding.op_kernels()`, calling torch directly."""

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
    def concatenate(xs, axis):
        return torch.cat(xs, axis)

    @staticmethod
    def take_rows(tree, indices):
        # Keras' take converts and range-corrects the indices for every tensor (4 small
        # ops each); the ids here are valid, so convert once and index_select.
        indices = indices.long()
        return keras.tree.map_structure(lambda x: torch.index_select(x, 0, indices), tree)

    @staticmethod
    def activation(name):
        """torch's own form of a feed-forward activation (`layers.get_activation` names),
        or None: Keras' torch ops call the same functions after ~10 us of checks."""
        return _ACTIVATIONS.get(name)

    @staticmethod
    def split(x, sizes):
        return torch.split(x, list(sizes), dim=-1)

    @staticmethod
    def cache_entries(k, v, dtype):
        return torch.stack([k, v], 1).transpose(2, 3).to(dtype)

    @staticmethod
    def attention(q, k, v, scale, heads_first=False, mask=None, bias=None,
                  mask_value=-1e9):
        """SDPA of q [b, t, h, d] over k/v [b, s, h, d] ([b, h, s, d] `heads_first`).

        `bias` (additive logits, e.g. T5's relative positions) and the boolean `mask`
        (True attends; masked logits get the finite `mask_value`, so a fully masked row
        is uniform rather than NaN) become one additive `attn_mask`.
        """
        if not heads_first:
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        additive = None
        if bias is not None:
            additive = bias.to(q.dtype)
        if mask is not None and additive is None and not torch.is_grad_enabled():
            # A mask alone in a decode loop (cross-attention's encoder mask, the same
            # tensor every step): its additive form once per generate(), None where every
            # key attends (as transformers drops an all-ones mask).
            additive = memo((id(mask), "additive", q.dtype),
                            lambda: (mask, None if bool(mask.all())
                                     else _additive_mask(mask, None, q, mask_value)))[1]
        elif mask is not None:
            additive = _additive_mask(mask, additive, q, mask_value)
        q = q.transpose(1, 2)
        if (additive is not None and additive.requires_grad and additive.dim() == 4
                and torch.is_grad_enabled()):
            # A trainable bias (T5's positions in training): SDPA's CPU flash kernel has
            # no gradient for attn_mask, so SDPA would take its math path; this is that
            # path without its extra passes (see `_BiasedAttention`).
            out = _BiasedAttention.apply(q, k, v, additive, float(scale))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive, scale=scale)
        return out.transpose(1, 2)

    @staticmethod
    def linear_cross_entropy(hidden, table, targets, weights, chunk, bias=None):
        """`losses.linear_cross_entropy` on [rows, d] `hidden`, [rows] `targets` and
        float32 `weights` (or None), as one autograd function (see `_LinearCrossEntropy`)."""
        return _LinearCrossEntropy.apply(hidden, table, bias, targets, weights, chunk)


def _additive_mask(mask, additive, q, mask_value):
    """`additive` (zeros if None) where the boolean `mask` attends, `mask_value` elsewhere."""
    # float16 cannot hold -1e9 (it would round to -inf and a masked row to NaN).
    fill = torch.tensor(max(mask_value, torch.finfo(q.dtype).min), dtype=q.dtype,
                        device=q.device)
    return torch.where(mask, torch.zeros((), dtype=q.dtype, device=q.device)
                       if additive is None else additive, fill)


_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_approximate": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


class _BiasedAttention(torch.autograd.Function):
    """softmax(q k^T * scale + bias) v on heads-first q [b, h, t, d], k/v [b, h, s, d], with
    the gradient of a broadcast [b or 1, h or 1, t, s] additive `bias` (summed over what it
    broadcasts on).

    SDPA with an attn_mask that requires a gradient takes its math path on CPU, which
    scales q and k by sqrt(scale) each (two passes even at T5's scale 1), adds the mask,
    runs a "safe" softmax (isneginf, all, where over every [b, h, t, s] block to zero fully
    masked rows, which a finite mask never produces) and differentiates all of it. This is
    the same arithmetic as matrix products, one in-place scale (skipped at 1) and add, a
    softmax and its fused backward, on q, k, v and the upstream gradient copied contiguous
    once (the math path copies the strided heads for each product that reads them). Values
    and gradients equal SDPA's: tested in tests/test_eager_training.py. Measured at T5's
    bench encoder block (q, k, v [16, 128, 4, 64] viewed heads-first, a [1, 4, 128, 128]
    bias), forward + backward, 1 thread: 31.5 ms against SDPA's 38.8 (medians of 7).
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        # Heads-first views of [b, t, h, d] tensors: batched products copy them anyway;
        # copied once here, the backward's four products read the same copies.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        scores = torch.matmul(q, k.transpose(-1, -2))
        if scale != 1.0:
            scores.mul_(scale)
        scores.add_(bias)
        probs = torch.softmax(scores, -1)
        del scores
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale = scale
        ctx.bias_shape = bias.shape
        return torch.matmul(probs, v)

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, probs = ctx.saved_tensors
        d_out = d_out.contiguous()
        d_v = torch.matmul(probs.transpose(-1, -2), d_out)
        d_scores = torch._softmax_backward_data(torch.matmul(d_out, v.transpose(-1, -2)),
                                                probs, -1, probs.dtype)
        d_bias = d_scores.sum_to_size(ctx.bias_shape) if ctx.needs_input_grad[3] else None
        if ctx.scale != 1.0:
            # Not in place: d_bias may be d_scores itself (a bias of the scores' shape).
            d_scores = d_scores * ctx.scale
        d_q = torch.matmul(d_scores, k)
        d_k = torch.matmul(d_scores.transpose(-1, -2), q)
        return d_q, d_k, d_v, d_bias, None


class _RMSNorm(torch.autograd.Function):
    """x * rsqrt(mean(x^2) + epsilon) * scale over the last axis of a float32 x, with its
    gradient written out: the autograd of the composite form records six operations and
    spends about ten passes over x in its backward; this spends five (the scale's gradient
    and the mean for x's share one product). Values equal the composite form exactly,
    gradients to rounding (tests/test_eager_training.py). Measured on a [16, 128, 256]
    float32 input, forward + backward, 1 thread: 8.0 ms against 10.4 (medians of 5).
    """

    @staticmethod
    def forward(ctx, x, scale, epsilon):
        inverse = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(epsilon))
        normed = x * inverse
        ctx.save_for_backward(normed, inverse, scale)
        return normed * scale

    @staticmethod
    def backward(ctx, upstream):
        normed, inverse, scale = ctx.saved_tensors
        width = normed.shape[-1]
        product = upstream * normed
        d_scale = product.reshape(-1, width).sum(0) if ctx.needs_input_grad[1] else None
        d_x = None
        if ctx.needs_input_grad[0]:
            # d x = inverse * (upstream * scale - normed * mean(upstream * scale * normed))
            mean = torch.matmul(product, scale).unsqueeze(-1).div_(width)
            d_x = (upstream * scale).addcmul_(normed, mean, value=-1).mul_(inverse)
        return d_x, d_scale, None


class _LinearCrossEntropy(torch.autograd.Function):
    """Output layer + cross-entropy, chunk by chunk, gradients computed in the forward.

    The same algorithm as the keras.ops form in `losses.linear_cross_entropy`, written
    with torch's fused kernels: log_softmax in one call, its exp in place as the softmax,
    the target's -1 scattered into it, and the table's gradient accumulated with addmm.
    The keras.ops form spends ~10 elementwise passes over each [chunk, vocabulary] block
    (max, subtract, exp, sum, divide, a one-hot built by comparison and cast, subtract,
    weight); this spends 4. Measured at 512 rows x 8192 vocabulary x 256 hidden, 1
    thread: see `tests/test_losses.py` for the equivalence and ARCHITECTURE.md for timings.
    """

    @staticmethod
    def forward(ctx, hidden, table, bias, targets, weights, chunk):
        rows = hidden.shape[0]
        kernel = table.to(hidden.dtype)
        targets = targets.long()
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        d_hidden = torch.empty_like(hidden)
        d_table = None
        d_bias = None
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            h = hidden[start:stop]
            t = targets[start:stop, None]
            logits = torch.mm(h, kernel.t()).float()
            if bias is not None:
                logits += bias.float()
            log_probs = torch.log_softmax(logits, dim=-1)
            del logits
            losses = log_probs.gather(1, t)[:, 0].neg_()
            # d loss / d logits = softmax - onehot, built in the log-probabilities' buffer.
            grad = log_probs.exp_()
            grad.scatter_add_(1, t, torch.full(t.shape, -1.0, device=grad.device))
            if weights is None:
                total += losses.sum()
            else:
                w = weights[start:stop]
                total += torch.dot(losses, w)
                grad.mul_(w[:, None])
            grad = grad.to(hidden.dtype)
            torch.mm(grad, kernel, out=d_hidden[start:stop])
            part = torch.mm(grad.t(), h).float()
            d_table = part if d_table is None else d_table.add_(part)
            if bias is not None:
                part = grad.float().sum(0)
                d_bias = part if d_bias is None else d_bias.add_(part)
        ctx.save_for_backward(d_hidden, d_table, d_bias)
        ctx.dtypes = (table.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, upstream):
        d_hidden, d_table, d_bias = ctx.saved_tensors
        table_dtype, bias_dtype = ctx.dtypes
        upstream = upstream.float()
        grads = [(d_hidden.float() * upstream).to(d_hidden.dtype),
                 (d_table * upstream).to(table_dtype), None, None, None, None]
        if d_bias is not None:
            grads[2] = (d_bias * upstream).to(bias_dtype)
        return tuple(grads)


class ImageOps:
    """channels_last image kernels (`backend.image_kernels()`): torch's own conv and group
    norm on an NCHW *view* of an NHWC tensor. A contiguous NHWC tensor permuted to NCHW is
    contiguous in torch.channels_last memory format, which oneDNN convolutions and the CPU
    group norm read directly and write back in the same format, so the output permuted
    back is a contiguous NHWC tensor and no transpose is ever copied. Differentiable."""

    @staticmethod
    def conv2d(x, kernel, bias, strides, padding):
        """x [b, h, w, in], kernel [kh, kw, in, out] (Keras' layout), symmetric int
        `padding` per spatial axis -> [b, h', w', out]."""
        inputs = x.permute(0, 3, 1, 2)
        if not inputs.is_contiguous(memory_format=torch.channels_last):
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        out = F.conv2d(inputs, kernel.permute(3, 2, 0, 1), bias, stride=tuple(strides),
                       padding=tuple(padding))
        return out.permute(0, 2, 3, 1)

    @staticmethod
    def group_norm(x, groups, gamma, beta, epsilon):
        """Group norm of x [b, h, w, c] over (h, w, c / groups), computed in float32 (as
        Keras' GroupNormalization), returned in x's dtype."""
        inputs = x.permute(0, 3, 1, 2)
        if not inputs.is_contiguous(memory_format=torch.channels_last):
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        gamma = None if gamma is None else gamma.float()
        beta = None if beta is None else beta.float()
        out = F.group_norm(inputs.float(), groups, gamma, beta, epsilon)
        return out.to(x.dtype).permute(0, 2, 3, 1)

    @staticmethod
    def attention(q, k, v, scale):
        """SDPA of q [b, t, h, d] over k/v [b, s, h, d] on heads-first views. Keras' torch
        `dot_product_attention` copies q, k and v contiguous first on CPU (three copies
        per call); torch's CPU kernel reads the strided views."""
        return TorchOps.attention(q, k, v, scale)


def _last_axis(layer, x):
    return layer.axis in (-1, [-1], (-1,), [len(x.shape) - 1], (len(x.shape) - 1,))


def _weights(layer, read):
    """`read(layer)` (the torch tensors a kernel uses, or None where the kernel declines)
    once per eager block: reading a Keras variable's value costs ~7 us, and weights cannot
    change inside one generate() or one training step (`decoding.memo`)."""
    return memo((id(layer), "kernel_weights"), lambda: read(layer))


def _dense_weights(layer):
    if layer.activation is not keras.activations.linear or layer.lora_enabled:
        return None
    return layer.kernel.value, None if layer.bias is None else layer.bias.value


@register_kernel(keras.layers.Dense)
def dense(layer, x, **kwargs):
    weights = None if kwargs else _weights(layer, _dense_weights)
    if weights is None:
        return NotImplemented
    return TorchOps.linear(x, *weights)


def _layer_norm_weights(layer):
    if layer.rms_scaling:
        return None
    return (None if layer.gamma is None else layer.gamma.value,
            None if layer.beta is None else layer.beta.value)


@register_kernel(keras.layers.LayerNormalization)
def layer_norm(layer, x, **kwargs):
    weights = None if kwargs or not _last_axis(layer, x) else _weights(layer,
                                                                        _layer_norm_weights)
    if weights is None:
        return NotImplemented
    return TorchOps.layer_norm(x, *weights, layer.epsilon)


@register_kernel(keras.layers.Dropout)
def dropout(layer, x, training=None, **kwargs):
    # Keras' Dropout returns its input unless training with a positive rate.
    if kwargs or (training and layer.rate > 0):
        return NotImplemented
    return x


@register_kernel(keras.layers.RMSNormalization)
def rms_norm(layer, x, **kwargs):
    if kwargs or not _last_axis(layer, x):
        return NotImplemented
    scale = layer.scale.value
    if (torch.is_grad_enabled() and x.dtype == torch.float32 and scale.dtype == torch.float32
            and (x.requires_grad or scale.requires_grad)):
        return _RMSNorm.apply(x, scale, float(layer.epsilon))
    # T5's RMS norm: the mean square in float32, then the scale in the input's dtype.
    variance = x.float().pow(2).mean(-1, keepdim=True)
    normed = (x.float() * torch.rsqrt(variance + layer.epsilon)).to(x.dtype)
    return normed * scale


@register_kernel(keras.layers.Conv2D)
def conv2d(layer, x, **kwargs):
    # Keras' own Conv2D in an eager loop (e.g. a UNet's output conv, kept a Conv2D so that
    # saved files keep their weight paths): the ImageOps kernel for plain convs.
    if (kwargs or layer.groups != 1 or tuple(layer.dilation_rate) != (1, 1)
            or layer.data_format != "channels_last" or layer.lora_enabled
            or getattr(layer, "quantization_mode", None) or x.dim() != 4):
        return NotImplemented
    if layer.padding == "valid":
        padding = (0, 0)
    elif tuple(layer.strides) == (1, 1) and all(size % 2 for size in layer.kernel_size):
        padding = tuple(size // 2 for size in layer.kernel_size)
    else:
        return NotImplemented
    bias = layer.bias.value if layer.use_bias else None
    out = ImageOps.conv2d(x, layer.kernel.value, bias, layer.strides, padding)
    return out if layer.activation is None else layer.activation(out)


@register_kernel(keras.layers.GroupNormalization)
def group_norm(layer, x, **kwargs):
    if kwargs or x.dim() != 4 or layer.axis not in (-1, 3):
        return NotImplemented
    gamma = layer.gamma.value if layer.scale else None
    beta = layer.beta.value if layer.center else None
    return ImageOps.group_norm(x, layer.groups, gamma, beta, layer.epsilon)


def fused_adam_step(variables, grads, momentums, velocities, step, learning_rate, beta_1,
                    beta_2, epsilon):
    """Keras' Adam update (`keras.optimizers.Adam`'s formula) of torch tensors in place, as
    one fused torch kernel (`torch._fused_adamw_`, no weight decay: Keras applies it first).

    Keras divides by sqrt(v) + epsilon after scaling the step by sqrt(1 - beta_2^t); torch
    adds its epsilon to sqrt(v) / sqrt(1 - beta_2^t); epsilon / sqrt(1 - beta_2^t) makes the
    two equal. `step` is the 1-based step count.
    """
    correction = (1.0 - beta_2 ** step) ** 0.5
    steps = [torch.tensor(float(step), dtype=torch.float32)] * len(variables)
    torch._fused_adamw_(variables, grads, momentums, velocities, [], steps,
                        lr=float(learning_rate), beta1=float(beta_1), beta2=float(beta_2),
                        weight_decay=0.0, eps=float(epsilon) / correction, amsgrad=False,
                        maximize=False)


def write_in_place(buffer, axis, start, update):
    """Write into a contiguous torch buffer in place; False for a non-contiguous one (a
    broadcast view whose rows share memory, such as Keras' `repeat` of one row)."""
    if not isinstance(buffer, torch.Tensor) or not buffer.is_contiguous():
        return False
    index = (slice(None),) * axis + (slice(start, start + update.shape[axis]),)
    buffer[index] = update
    return True


def read_torch_state_dict(bin_file, path):
    """The tensors of a `pytorch_model.bin` as numpy arrays (floats as float32)."""
    state = torch.load(bin_file, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items()}


def torch_ddp_model(model, **kwargs):
    """Wrap a built Keras model (torch backend) in `DistributedDataParallel`.

    `torch.distributed.init_process_group` must have run ("gloo" on CPU). DDP broadcasts
    rank 0's weights on construction, so every process starts from the same model.
    With gloo, processes that share one machine should set `GLOO_SOCKET_IFNAME=lo`: gloo
    otherwise takes the address the hostname resolves to, which in some containers the
    other process cannot reach, and the rendezvous waits until its timeout. Tear down in
    this order: `torch.distributed.barrier()`, `del ddp`, then `destroy_process_group()`;
    destroying the group first leaves the wrapper's reducer to free it later, which can
    deadlock in gloo's worker thread (seen intermittently on CPU).

    Example:
    >>> torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    >>> ddp = torch_ddp_model(model)
    """
    if not torch.distributed.is_initialized():
        raise ValueError("Call torch.distributed.init_process_group(...) before "
                         "torch_ddp_model(model).")
    if not model.built:
        raise ValueError("Build the model (call it once on a batch) before wrapping it in DDP.")
    return torch.nn.parallel.DistributedDataParallel(model, **kwargs)


def ddp_train_step(ddp_model, model, optimizer, loss_fn, x, y):
    """One data-parallel step on this process's shard; returns the global mean loss.

    Gradients are averaged over processes by DDP in `backward()`, then the Keras
    optimizer applies them, so equal shards reproduce one step on the whole batch.
    """
    model.zero_grad(set_to_none=True)
    loss = loss_fn(y, ddp_model(x))
    loss.backward()
    variables = model.trainable_variables
    optimizer.apply([v.value.grad for v in variables], variables)
    global_loss = loss.detach().clone()
    torch.distributed.all_reduce(global_loss)
    return float(global_loss) / torch.distributed.get_world_size()


class _CheckedIterable(torch.utils.data.IterableDataset):
    def __init__(self, loader, check):
        self.loader = loader
        self.check = check

    def __iter__(self):
        for batch in self.loader:
            self.check(batch)
            yield batch

    def __len__(self):
        return len(self.loader)


def checked_torch_dataloader(loader, check):
    """A `DataLoader` yielding `loader`'s batches after `check(batch)` (host-side, raises
    on a bad batch); `batch_size=None` passes the already-collated batches through."""
    return torch.utils.data.DataLoader(_CheckedIterable(loader, check), batch_size=None)
