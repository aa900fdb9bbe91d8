"""Command-line pieces the guides share: checked numbers, `--tiny`, the JSON of results."""

import argparse
import contextlib
import functools
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
    Adds the `--tiny` flag itself, its help listing the tiny defaults.
    """
    parser.add_argument("--tiny", action="store_true",
                        help="a seconds-long smoke run: smaller defaults (" + ", ".join(
                            f"{k}={v}" for k, v in tiny_defaults.items()) + "); flags given win")
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


@contextlib.contextmanager
def tensorflow_hidden():
    """Within: Keras sees no TensorFlow, so it does not import it on JAX or torch.

    `keras.utils.set_random_seed` (to seed TensorFlow too) and `model.save` (to check for
    a `tf.TensorShape`) import TensorFlow whenever it is installed, whatever the backend:
    seconds and its log banners for nothing. An absent module is what Keras checks for;
    afterwards its lazy handle is told to look again, so a later tf.data use still works.
    """
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
    try:
        yield
    finally:
        del sys.modules["tensorflow"]
        from keras.src.utils import module_utils

        module_utils.tensorflow._available = None  # it cached "unavailable"


def runs_without_tensorflow(main):
    """Decorates a guide's `main`: on JAX or torch it runs as if TensorFlow were absent.

    Beyond seeding and saving, Keras' config serialization (`get_config` of any model)
    asks whether TensorFlow is installed too; a guide on JAX or torch needs none of it.
    """
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        with tensorflow_hidden():
            return main(*args, **kwargs)

    return wrapped


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)` without importing TensorFlow on JAX or torch."""
    with tensorflow_hidden():
        keras.utils.set_random_seed(seed)


def save_model(model, path):
    """`model.save(path)` without importing TensorFlow on JAX or torch."""
    with tensorflow_hidden():
        model.save(path)
