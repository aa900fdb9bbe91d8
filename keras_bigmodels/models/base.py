"""Base classes of every family: presets on backbones and tasks, config round-trips."""

import keras

from keras_bigmodels import presets


class Backbone(keras.Model):
    """A functional network built from constructor kwargs; subclasses set `family`.

    Subclasses build their graph in `__init__`, call `super().__init__(inputs, outputs)`,
    and list their constructor kwargs in `get_config`.
    """

    family = None

    @classmethod
    def from_preset(cls, name, **overrides):
        """Build the preset's architecture (random init); `overrides` change kwargs.

        Example:
        >>> backbone = GPTBackbone.from_preset("gpt2-small", dropout=0.0)
        """
        config = presets.constructor_kwargs(presets.get_preset(name, family=cls.family))
        config.update(overrides)
        return cls(**config)

    def get_config(self):
        # Functional subclasses are rebuilt from their kwargs, not from the graph.
        return {"name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "dtype" in config and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


class Task(keras.Model):
    """What users fit: a backbone plus a head, with compile defaults."""

    backbone_cls = None

    @classmethod
    def from_preset(cls, name, backbone_overrides=None, **kwargs):
        """A task on a random-init backbone of the named preset.

        Example:
        >>> lm = GPTCausalLM.from_preset("gpt2-small")
        """
        backbone = cls.backbone_cls.from_preset(name, **(backbone_overrides or {}))
        return cls(backbone=backbone, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
