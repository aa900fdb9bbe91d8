"""PyTorch halves of the backend boundary: the eager decode loop with its registered
kernels (see `decoding`), legacy checkpoint reading, and DistributedDataParallel."""

import keras
import torch
import torch.nn.functional as F

from keras_bigmodels.backend.decoding import eager_decoding, register_kernel


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
    def split(x, sizes):
        return torch.split(x, list(sizes), dim=-1)

    @staticmethod
    def transposed_copy(x):
        # A contiguous [hidden, vocabulary] copy: a one-row product with it streams the
        # table ~3x faster than with the transposed view (measured, 2-core CPU).
        return x.t().contiguous()

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
        if mask is not None:
            # float16 cannot hold -1e9 (it would round to -inf and a masked row to NaN).
            fill = torch.tensor(max(mask_value, torch.finfo(q.dtype).min), dtype=q.dtype,
                                device=q.device)
            additive = torch.where(mask, torch.zeros((), dtype=q.dtype, device=q.device)
                                   if additive is None else additive, fill)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=additive,
                                             scale=scale)
        return out.transpose(1, 2)


def _last_axis(layer, x):
    return layer.axis in (-1, [-1], (-1,), [len(x.shape) - 1], (len(x.shape) - 1,))


@register_kernel(keras.layers.Dense)
def dense(layer, x, **kwargs):
    if kwargs or layer.activation is not keras.activations.linear or layer.lora_enabled:
        return NotImplemented
    bias = None if layer.bias is None else layer.bias.value
    return TorchOps.linear(x, layer.kernel.value, bias)


@register_kernel(keras.layers.LayerNormalization)
def layer_norm(layer, x, **kwargs):
    if kwargs or layer.rms_scaling or not _last_axis(layer, x):
        return NotImplemented
    gamma = None if layer.gamma is None else layer.gamma.value
    beta = None if layer.beta is None else layer.beta.value
    return TorchOps.layer_norm(x, gamma, beta, layer.epsilon)


@register_kernel(keras.layers.RMSNormalization)
def rms_norm(layer, x, **kwargs):
    if kwargs or not _last_axis(layer, x):
        return NotImplemented
    # T5's RMS norm: the mean square in float32, then the scale in the input's dtype.
    variance = x.float().pow(2).mean(-1, keepdim=True)
    normed = (x.float() * torch.rsqrt(variance + layer.epsilon)).to(x.dtype)
    return normed * layer.scale.value


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
