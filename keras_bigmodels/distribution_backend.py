"""Data parallelism on the backends `keras.distribution` does not cover in Keras 3.15.

TensorFlow: `tf.distribute.MirroredStrategy` drives `model.fit` (Keras 3's TensorFlow
trainer runs under the strategy that was in scope when the model was built).
PyTorch: a Keras model on the torch backend is a `torch.nn.Module`, so
`DistributedDataParallel` wraps it and all-reduces gradients during `backward()`.
"""

import keras


def mirrored_strategy(devices=None):
    """A `tf.distribute.MirroredStrategy` over `devices` (all visible GPUs/CPU when None).

    Example:
    >>> strategy = mirrored_strategy(["/cpu:0", "/cpu:1"])
    >>> with strategy.scope():
    ...     model = build_model(); model.compile("sgd", "mse")
    >>> model.fit(x, y, batch_size=8)   # each replica gets 4 rows, gradients are summed
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError("mirrored_strategy() is the TensorFlow backend's data parallelism; "
                         f"the current backend is {keras.backend.backend()!r}.")
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices)


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
    if keras.backend.backend() != "torch":
        raise ValueError("torch_ddp_model() is the PyTorch backend's data parallelism; "
                         f"the current backend is {keras.backend.backend()!r}.")
    import torch

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

    Example:
    >>> loss = ddp_train_step(ddp, model, keras.optimizers.SGD(0.1),
    ...                       keras.losses.MeanSquaredError(), x_shard, y_shard)
    """
    import torch

    model.zero_grad(set_to_none=True)
    loss = loss_fn(y, ddp_model(x))
    loss.backward()
    variables = model.trainable_variables
    optimizer.apply([v.value.grad for v in variables], variables)
    global_loss = loss.detach().clone()
    torch.distributed.all_reduce(global_loss)
    return float(global_loss) / torch.distributed.get_world_size()
