"""The preset registry: paper configs as plain dicts of constructor kwargs plus a source.

Each family registers its presets in its `config.py`, which `keras_bigmodels.models`
imports (and `import keras_bigmodels` imports that), so this module imports no model. Nothing here
allocates weights, so `flops.count_params("gpt3-175b")` can answer from a name.
"""

import copy

_PRESETS = {}
_COUNTERS = {}

# Keys of a preset that describe it rather than configure the constructor.
META_KEYS = ("source", "family", "description")


def register_presets(family, presets, param_counter=None):
    """Register `{name: config}` for a family, with its analytic parameter counter."""
    for name, config in presets.items():
        if name in _PRESETS and _PRESETS[name]["family"] != family:
            raise ValueError(f"Preset {name!r} is registered twice ({family}).")
        _PRESETS[name] = {"family": family, **config}
    if param_counter is not None:
        _COUNTERS[family] = param_counter


def list_presets(family=None):
    return sorted(n for n, c in _PRESETS.items() if family is None or c["family"] == family)


def get_preset(name, family=None):
    """A copy of the preset's config (with `family` and `source`); clear error if unknown."""
    known = list_presets(family)
    if name not in known:
        raise ValueError(
            f"Unknown preset {name!r}"
            + (f" for {family}" if family else "")
            + f". Known presets: {', '.join(known)}."
        )
    return copy.deepcopy(_PRESETS[name])


def constructor_kwargs(config):
    return {k: v for k, v in config.items() if k not in META_KEYS}


def param_counter(family):
    return _COUNTERS.get(family)
