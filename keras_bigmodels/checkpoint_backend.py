"""Backend bridge of checkpoint reading: the one place that imports torch to read a
legacy `pytorch_model.bin` (safetensors checkpoints never need it)."""


def read_torch_state_dict(bin_file, path):
    """The tensors of a `pytorch_model.bin` as numpy arrays (floats as float32)."""
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"`{path}` holds only pytorch_model.bin; loading it needs torch. Re-save the "
            "checkpoint with `save_pretrained(..., safe_serialization=True)`."
        ) from None
    state = torch.load(bin_file, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items()}
