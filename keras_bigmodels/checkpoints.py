"""Reading local Hugging Face checkpoint directories (config.json + safetensors), no torch.

Families describe how HF weight names map onto their variables; this module reads the
files, strips task prefixes, ignores known buffers, and reports missing or unexpected
weights by name instead of failing deep inside an assignment.
"""

import json
import os
import re

import keras
import numpy as np

# Buffers that some transformers versions save but that are not weights.
KNOWN_BUFFERS = (
    r".*position_ids$",
    r".*\.masked_bias$",
    r".*\.attn\.bias$",
    r".*relative_position_index$",
    r".*num_batches_tracked$",
)


def read_config(path):
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(
            f"`{path}` is not a Hugging Face checkpoint directory: no config.json. Pass the "
            "directory written by `save_pretrained` (config.json + model.safetensors)."
        )
    with open(config_file) as f:
        return json.load(f)


def read_weights(path):
    """All tensors of a checkpoint directory as numpy arrays, by their HF names."""
    from safetensors.numpy import load_file

    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        return dict(load_file(single))
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        weights = {}
        for name in files:
            weights.update(load_file(os.path.join(path, name)))
        return weights
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(bin_file):
        if keras.backend.backend() != "torch":
            raise ValueError(
                f"`{path}` holds only pytorch_model.bin, which needs torch to read. Re-save the "
                "checkpoint with `save_pretrained(..., safe_serialization=True)`, or load it "
                "with KERAS_BACKEND=torch.")
        from keras_bigmodels.backend import read_torch_state_dict

        return read_torch_state_dict(bin_file, path)
    raise ValueError(f"No model.safetensors (or index, or pytorch_model.bin) in `{path}`.")


def read_checkpoint(path):
    """(config, weights) of a local HF checkpoint directory."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"`{path}` is not a directory; `from_huggingface` reads a local "
                         "checkpoint directory (nothing is downloaded).")
    return read_config(path), read_weights(path)


class WeightLoader:
    """Hands out checkpoint tensors by name and reports what was never used or found.

    Args:
        weights: {name: array}.
        prefixes: task prefixes to strip (e.g. "bert.", "roberta."), tried in order.
        ignore: regexes of names that may stay unused (heads we do not build, buffers).
    """

    def __init__(self, weights, prefixes=(), ignore=()):
        self.weights = {}
        for name, value in weights.items():
            for prefix in prefixes:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    break
            self.weights[name] = value
        self.ignore = [re.compile(p) for p in (*KNOWN_BUFFERS, *ignore)]
        self.used = set()
        self.missing = []

    def __contains__(self, name):
        return name in self.weights

    def get(self, name):
        if name not in self.weights:
            self.missing.append(name)
            return None
        self.used.add(name)
        return np.asarray(self.weights[name])

    def assign(self, variable, name, transform=None):
        """Assign checkpoint tensor `name` (after `transform`) to a Keras variable."""
        value = self.get(name)
        if value is None:
            return
        if transform is not None:
            value = transform(value)
        value = np.reshape(value, variable.shape) if value.size == np.prod(variable.shape) else value
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Checkpoint weight `{name}` has shape {tuple(value.shape)} but "
                f"`{variable.path}` needs {tuple(variable.shape)}: the checkpoint's config "
                "does not match the model."
            )
        variable.assign(value.astype(variable.dtype))

    def finish(self):
        """Raise a clear error listing missing and unexpected weights, if any."""
        unexpected = sorted(
            n for n in self.weights
            if n not in self.used and not any(p.fullmatch(n) for p in self.ignore)
        )
        if self.missing or unexpected:
            lines = ["The checkpoint does not match the model's architecture."]
            if self.missing:
                lines.append(f"Missing weights ({len(self.missing)}): {', '.join(self.missing[:20])}")
            if unexpected:
                lines.append(f"Unexpected weights ({len(unexpected)}): {', '.join(unexpected[:20])}")
            raise ValueError("\n".join(lines))
