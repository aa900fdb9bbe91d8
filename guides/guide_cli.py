"""Command-line pieces the guides share: checked numbers, `--tiny`, the JSON of results."""

import argparse
import json
import os
import sys

import keras


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to every option's help, except where there is none."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parser(description):
    """An argument parser whose `--help` shows every default (give each option a help)."""
    return argparse.ArgumentParser(description=description, formatter_class=_ShowDefaults)


def positive_int(text):
    """An argparse type: an integer >= 1 (`--steps 0` is an error, not an empty run)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def fraction(text):
    """An argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text}")
    return value


def parse(parser, argv, tiny_defaults):
    """Parse `argv`; with `--tiny`, `tiny_defaults` replace the defaults only.

    Flags given on the command line keep their values: `--tiny --epochs 5` runs 5 epochs.
    """
    args = parser.parse_args(argv)
    if getattr(args, "tiny", False):
        parser.set_defaults(**tiny_defaults)
        args = parser.parse_args(argv)
    return args


def write_json(path, results):
    """Write the run's numbers (and the command line that made them) to `path`."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {path}")


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)`, without importing TensorFlow on JAX or torch.

    Keras seeds TensorFlow whenever it is installed, importing it just for that (seconds,
    and its log banners) even where the backend is JAX or torch and nothing uses it. So
    on those backends the module is hidden for this one call (an absent module is what
    Keras checks for), and Keras' lazy handle is told to look again on its next use.
    """
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
    try:
        keras.utils.set_random_seed(seed)
    finally:
        del sys.modules["tensorflow"]
        from keras.src.utils import module_utils

        # The handle caches "unavailable"; forget it, so that a later tf.data use works.
        module_utils.tensorflow._available = None
