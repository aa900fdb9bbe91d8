"""Base classes of every family: presets on backbones and tasks, config round-trips."""

import importlib

import keras

from keras_bigmodels import presets
from keras_bigmodels.backend.decoding import eager_training
from keras_bigmodels.models import inputs


# Why two bases per role (functional and subclassed): the first time a Model subclass is
# built from `inputs`/`outputs`, Keras rewrites the bases of every class between it and
# keras.Model into Functional subclasses (`inject_functional_model_class`). A subclassed
# network (a UNet, DiT, a task with its own `call`) deriving from the same base would then
# inherit Functional for the rest of the process and fail to construct. The shared
# behaviour therefore lives in plain mixins, and functional and subclassed models derive
# from different keras.Model subclasses that Keras never rewrites for each other.


class BackboneMethods:
    """Presets, Hugging Face loading and config round-trips shared by every backbone."""

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

    # The module mapping the family's Hugging Face checkpoints onto this backbone: its
    # `load_backbone(cls, path, dtype=None, **overrides)` does the work; None: no mapping.
    huggingface_mapping = None

    @classmethod
    def from_huggingface(cls, path, dtype=None, **overrides):
        """A backbone with the weights of a local Hugging Face checkpoint directory.

        config.json's `model_type` must be one the family reads; task checkpoints work too
        (their heads are ignored). Nothing is downloaded and no torch is needed.

        Args:
            path: a local directory written by `save_pretrained`.
            dtype: the dtype policy (e.g. "bfloat16").
            **overrides: constructor kwargs to change (e.g. `dropout`).

        Example:
        >>> backbone = BertBackbone.from_huggingface("checkpoints/bert-base-uncased")
        """
        if cls.huggingface_mapping is None:
            raise NotImplementedError(f"{cls.__name__} reads no Hugging Face checkpoints.")
        mapping = importlib.import_module(cls.huggingface_mapping)
        return mapping.load_backbone(cls, path, dtype=dtype, **overrides)

    # The constructor kwargs `get_config` returns, read back from attributes of the same
    # name; an entry ("kwarg", "attribute") reads another attribute. Tuples come back as
    # lists; "dtype" is added from the model's dtype policy.
    config_keys = ()

    def get_config(self):
        # Functional subclasses are rebuilt from their kwargs, not from the graph.
        config = {"name": self.name, "trainable": self.trainable}
        for entry in self.config_keys:
            key, attribute = entry if isinstance(entry, tuple) else (entry, entry)
            value = getattr(self, attribute)
            config[key] = list(value) if isinstance(value, tuple) else value
        config["dtype"] = keras.dtype_policies.serialize(self.dtype_policy)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "dtype" in config and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


class Backbone(BackboneMethods, keras.Model):
    """A functional network built from constructor kwargs; subclasses set `family`.

    Subclasses build their graph in `__init__`, call `super().__init__(inputs, outputs)`,
    keep each constructor kwarg as an attribute and name them in `config_keys`.
    """


class SubclassedBackbone(BackboneMethods, keras.Model):
    """A backbone written as a subclassed keras.Model (its own `call`): UNets, DiT.

    Same contract as `Backbone` (family, config_keys, presets), kept on a separate base
    so Keras' functional rewriting of `Backbone` never reaches it (see the note above).
    """


class TaskMethods:
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

    # Saving and resuming ----------------------------------------------------------------
    # Tasks compile themselves in __init__ and override `compile` with defaults, so Keras'
    # default `compile_from_config` refuses to run: a reloaded model would come back with
    # the default optimizer, fresh optimizer state and no memory of its compile arguments.
    # Storing the arguments (plus task-specific ones in `compile_extras`) and compiling from
    # them again lets `keras.saving.load_model` restore the optimizer's variables too, so
    # training resumes where it stopped.
    compile_extras = None

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.compile_extras:
            config = dict(config)
            config["task_compile_extras"] = dict(self.compile_extras)
        return config

    def compile_from_config(self, config):
        config = dict(config)
        extras = config.pop("task_compile_extras", None) or {}
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config, **extras)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    # Checked data -----------------------------------------------------------------------
    # A compiled step cannot raise on an id past its embedding table or a label past the
    # classes: it trains on garbage or NaN. The data methods check the ranges the task
    # declares on the host first (see keras_bigmodels/models/inputs.py).
    def input_ranges(self):
        """{input name: (low, high)}: the half-open integer range of each id input.

        `high` may be `inputs.LengthOf(name)`: positions inside another input.
        """
        return {}

    def label_range(self):
        """(low, high) of the labels, {output name: (low, high)} for dict labels, or None.

        A label equal to the compiled loss's `ignore_class` is allowed too.
        """
        return None

    def fit(self, *args, **kwargs):
        return inputs.checked_call(self, "fit", super().fit, args, kwargs)

    def evaluate(self, *args, **kwargs):
        return inputs.checked_call(self, "evaluate", super().evaluate, args, kwargs)

    def predict(self, *args, **kwargs):
        return inputs.checked_call(self, "predict", super().predict, args, kwargs)

    def train_on_batch(self, *args, **kwargs):
        return inputs.checked_call(self, "train_on_batch", super().train_on_batch, args, kwargs)

    def test_on_batch(self, *args, **kwargs):
        return inputs.checked_call(self, "test_on_batch", super().test_on_batch, args, kwargs)

    def predict_on_batch(self, *args, **kwargs):
        return inputs.checked_call(self, "predict_on_batch", super().predict_on_batch, args,
                                   kwargs)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


class EagerTrainingStep:
    """Mixin for a task: Keras' train step inside `decoding.eager_training()`.

    On torch, whose training steps run eagerly, sublayers then take their registered
    kernels and op kernels (each with a value-and-gradient test in
    tests/test_eager_training.py); a no-op on JAX and TensorFlow and under `jit_compile`.
    Put it before the task base: `class Seq2SeqLM(EagerTrainingStep, GenerativeTask)`.
    """

    def train_step(self, *args, **kwargs):
        with eager_training(not self.jit_compile):
            return super().train_step(*args, **kwargs)


class Task(TaskMethods, keras.Model):
    """A functional task: builds its graph on the backbone and calls
    `super().__init__(inputs, outputs)`."""


class SubclassedTask(TaskMethods, keras.Model):
    """A task written as a subclassed keras.Model (its own `call`/`compute_loss`):
    diffusion models, multi-objective pretrainers. Same contract as `Task`."""
