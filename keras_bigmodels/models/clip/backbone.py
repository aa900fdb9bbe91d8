"""CLIP (Radford et al. 2021): a ViT image tower, a causal text Transformer, one joint space.

Three functional backbones:

* `CLIPVisionEncoder`: images -> per-patch states and the post-layernormed [CLS] vector
  (our `ViTEmbedding` without a projection bias, CLIP's extra pre-layernorm, pre-norm
  blocks).
* `CLIPTextEncoder`: token ids -> final-layernormed per-token states and the vector at the
  end-of-text token (causal self-attention). Latent diffusion conditions on it alone.
* `CLIPBackbone`: both towers, bias-free linear projections into the joint space, unit
  normalization, and the similarity logits scaled by a learnable temperature.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_bigmodels import presets
from keras_bigmodels.layers.embeddings import TransformerEmbedding
from keras_bigmodels.layers.transformer import TransformerEncoderBlock
from keras_bigmodels.models.base import Backbone
from keras_bigmodels.models.clip.config import (SHARED_KEYS, TEXT_KEYS, VISION_KEYS,
                                               tower_kwargs)
from keras_bigmodels.models.vit.backbone import ViTEmbedding, interpolate_position_embeddings
from keras_bigmodels.utils import check_pair, check_positive_int, check_transformer_dims

HUGGINGFACE_MAPPING = "keras_bigmodels.models.clip.huggingface"

# CLIP's temperature: initialized to 1/0.07 and never above 100 (the paper, section 2.5).
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = 100.0

class _TowerPresets:
    """`from_preset` of a tower: the tower's part of a CLIP preset (or its own kwargs)."""

    tower_keys = None

    @classmethod
    def from_preset(cls, name, **overrides):
        """The tower of a CLIP preset (random init); `overrides` use the tower's kwargs.

        Example:
        >>> encoder = CLIPTextEncoder.from_preset("clip-vit-large-patch14")
        """
        config = presets.constructor_kwargs(presets.get_preset(name, family=cls.family))
        return cls(**{**tower_kwargs(config, cls.tower_keys), **overrides})


def _default_name(kwargs, name):
    # Each tower builds its graph inside a name scope of its own name, so that the two
    # towers' variables have distinct paths ("vision_encoder/transformer_layer_0/...")
    # inside one CLIPBackbone: Keras' torch backend keys its parameters by path.
    kwargs.setdefault("name", name)
    return kwargs["name"]


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class CLIPVisionEncoder(_TowerPresets, Backbone):
    """CLIP's image tower: images [batch, H, W, C] -> patch states and a pooled vector.

    A ViT with CLIP's two changes: a LayerNorm (`pre_norm`) on the embeddings before the
    first block, and a LayerNorm (`post_norm`) on the [CLS] state only. Outputs a dict:
    `sequence_output` [batch, 1 + patches, hidden_dim] (the last block's output, before
    `post_norm`, as transformers' `last_hidden_state`) and `pooled_output`
    [batch, hidden_dim] (`post_norm` of the [CLS] state).

    Args:
        image_size: int or (height, width).
        patch_size: int or (height, width) of a patch.
        num_layers, num_heads, hidden_dim, intermediate_dim: tower size.
        num_channels: image channels.
        activation: feed-forward activation ("quick_gelu" as OpenAI's checkpoints).
        layer_norm_epsilon: epsilon of every LayerNorm.
        dropout: residual dropout; attention_dropout: on attention probabilities.
        use_fused_attention: use `keras.ops.dot_product_attention` when possible.
        dtype: dtype policy.

    Example:
    >>> encoder = CLIPVisionEncoder(image_size=32, patch_size=8, num_layers=2, num_heads=2,
    ...                             hidden_dim=32, intermediate_dim=64)
    >>> encoder(np.zeros((1, 32, 32, 3)))["pooled_output"].shape
    (1, 32)
    """

    family = "clip"
    tower_keys = VISION_KEYS
    config_keys = ("image_size", "patch_size", "num_layers", "num_heads", "hidden_dim",
                   "intermediate_dim", "num_channels", "activation", "layer_norm_epsilon",
                   "dropout", "attention_dropout", "use_fused_attention")
    huggingface_mapping = HUGGINGFACE_MAPPING

    def __init__(self, image_size=224, patch_size=32, num_layers=12, num_heads=12,
                 hidden_dim=768, intermediate_dim=3072, num_channels=3,
                 activation="quick_gelu", layer_norm_epsilon=1e-5, dropout=0.0,
                 attention_dropout=0.0, use_fused_attention=None, dtype=None, **kwargs):
        image = check_pair(image_size, "image_size")
        patch = check_pair(patch_size, "patch_size")
        for size, p, axis in zip(image, patch, ("height", "width")):
            if size % p:
                raise ValueError(
                    f"`image_size` {axis} {size} is not divisible by `patch_size` {p}.")
        check_transformer_dims(num_layers=num_layers, num_heads=num_heads,
                               hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
                               num_channels=num_channels)
        grid = (image[0] // patch[0], image[1] // patch[1])
        with keras.name_scope(_default_name(kwargs, "clip_vision_encoder")):
            images = keras.Input((image[0], image[1], num_channels), name="images")
            x = ViTEmbedding(patch, hidden_dim, grid[0] * grid[1], use_bias=False, dtype=dtype,
                             name="embedding")(images)
            x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                name="pre_norm")(x)
            x = keras.layers.Dropout(dropout, dtype=dtype, name="embedding_dropout")(x)
            for i in range(num_layers):
                x = TransformerEncoderBlock(
                    num_heads=num_heads, intermediate_dim=intermediate_dim,
                    activation=activation, dropout=dropout,
                    attention_dropout=attention_dropout, normalize_first=True,
                    layer_norm_epsilon=layer_norm_epsilon,
                    use_fused_attention=use_fused_attention, dtype=dtype,
                    name=f"transformer_layer_{i}",
                )(x)
            pooled = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                     name="post_norm")(x[:, 0])
        super().__init__(inputs=images, outputs={"sequence_output": x, "pooled_output": pooled},
                         dtype=dtype, **kwargs)
        self.image_size = image
        self.patch_size = patch
        self.grid_size = grid
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_channels = num_channels
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.use_fused_attention = use_fused_attention

    def check_images(self, images, name="images"):
        """Raise a ValueError naming `images` unless its shape fits this encoder."""
        check_image_shape(images, self.image_size, self.num_channels, name)

    def __call__(self, *args, **kwargs):
        # Before Keras' input-spec check, whose message says neither the size the
        # encoder was built for nor how to run at another one.
        self.check_images(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)

    def with_image_size(self, image_size):
        """A copy of this encoder for another resolution, positions resized bicubically.

        The patch-position table is resized as an image (torch's bicubic, a = -0.75, as
        transformers' `interpolate_pos_encoding=True` does on every call, here once on
        the weights); the [CLS] position and every other weight are copied. At the
        encoder's own size the copy computes the same function.

        Args:
            image_size: int or (height, width), each divisible by `patch_size`.

        Example:
        >>> encoder = CLIPVisionEncoder(image_size=32, patch_size=8, num_layers=2,
        ...                             num_heads=2, hidden_dim=32, intermediate_dim=64)
        >>> encoder.with_image_size(48)(np.zeros((1, 48, 48, 3)))["pooled_output"].shape
        (1, 32)
        """
        config = self.get_config()
        config["image_size"] = list(check_pair(image_size, "image_size"))
        new = self.__class__.from_config(config)
        copy_with_resized_positions(self, new, self, new)
        return new


def check_image_shape(images, image_size, num_channels, name="images"):
    """Raise a ValueError naming `name` unless it is [batch, *image_size, num_channels]."""
    shape = getattr(images, "shape", None)
    if shape is None:
        return
    expected = (*image_size, num_channels)
    if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], expected)):
        raise ValueError(
            f"`{name}` must be [batch, {expected[0]}, {expected[1]}, {expected[2]}] "
            f"(image_size={tuple(image_size)}, num_channels={num_channels}, channels last); "
            f"received shape {tuple(shape)}. For another resolution use "
            "`with_image_size(...)`, which interpolates the position embeddings.")


def copy_with_resized_positions(source, target, source_vision, target_vision):
    """Copy `source`'s weights into `target` (same architecture but the image size),
    the vision position table resized from `source_vision`'s grid to `target_vision`'s."""
    table = source_vision.get_layer("embedding").position_embedding.embeddings
    resized = ops.convert_to_numpy(interpolate_position_embeddings(
        table, source_vision.grid_size, target_vision.grid_size))
    target_table = target_vision.get_layer("embedding").position_embedding.embeddings
    for old, new in zip(source.weights, target.weights):
        new.assign(resized if new is target_table else old)


def end_of_text_positions(token_ids, eos_token_id=None):
    """[batch] positions CLIP pools the text at: the end-of-text token of each row.

    With `eos_token_id=None` it is the largest id of the row (OpenAI's vocabulary puts
    `<|endoftext|>` last, so the original CLIP takes the argmax); otherwise the first
    occurrence of `eos_token_id` (0 for a row without one, as transformers).

    Example:
    >>> end_of_text_positions(np.array([[49406, 320, 49407, 0]]))  # -> [2]
    """
    token_ids = ops.cast(token_ids, "int32")
    if eos_token_id is None:
        return ops.argmax(token_ids, axis=-1)
    return ops.argmax(ops.cast(ops.equal(token_ids, eos_token_id), "int32"), axis=-1)


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class EndOfTextPooling(keras.layers.Layer):
    """The state at each row's end-of-text token: [batch, length, dim] -> [batch, dim].

    Args:
        eos_token_id: see `end_of_text_positions` (None: each row's largest id).

    Example:
    >>> EndOfTextPooling()(np.ones((1, 3, 4)), np.array([[5, 9, 0]])).shape
    (1, 4)
    """

    def __init__(self, eos_token_id=None, **kwargs):
        super().__init__(**kwargs)
        self.eos_token_id = eos_token_id

    def call(self, sequence, token_ids):
        positions = end_of_text_positions(token_ids, self.eos_token_id)
        # A one-hot contraction rather than a gather: exact (one nonzero term per row)
        # and plain matrix work under any sharding of the batch.
        steps = ops.arange(ops.shape(token_ids)[1], dtype="int32")
        pick = ops.cast(ops.equal(steps[None, :], ops.cast(positions, "int32")[:, None]),
                        sequence.dtype)
        return ops.einsum("bl,bld->bd", pick, sequence)

    def compute_output_shape(self, sequence_shape, token_ids_shape):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(eos_token_id=self.eos_token_id)
        return config


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class CLIPTextEncoder(_TowerPresets, Backbone):
    """CLIP's text tower: token ids [batch, length] -> per-token states and a pooled vector.

    A pre-norm Transformer with a causal mask over token + learned position embeddings,
    then a final LayerNorm. Outputs a dict: `sequence_output` [batch, length, hidden_dim]
    (a block's output after the final LayerNorm: the last block's by default, what Stable
    Diffusion v1 conditions on; the penultimate one's with `sequence_output_layer=-2`,
    what Stable Diffusion 2 conditions on) and `pooled_output` [batch, hidden_dim] (the
    last block's state at the end-of-text token, final-layernormed, see
    `end_of_text_positions`: CLIP's text feature whatever `sequence_output_layer` is).
    Rows are padded on the right; the causal mask keeps the padding from changing any
    earlier state, so there is no padding mask.

    Args:
        vocabulary_size: token ids (49408 for OpenAI's BPE).
        max_sequence_length: learned positions (77).
        num_layers, num_heads, hidden_dim, intermediate_dim: tower size.
        activation: feed-forward activation ("quick_gelu" as OpenAI's checkpoints;
            "gelu" for OpenCLIP's).
        layer_norm_epsilon: epsilon of every LayerNorm.
        eos_token_id: the end-of-text id to pool at; None takes each row's largest id.
        sequence_output_layer: the block whose output (final-layernormed) is
            `sequence_output`, counted from the end when negative: -1 the last (CLIP,
            Stable Diffusion v1), -2 the penultimate (Stable Diffusion 2, transformers'
            `final_layer_norm(hidden_states[-2])`). In [-num_layers, num_layers).
        dropout: residual dropout; attention_dropout: on attention probabilities.
        use_fused_attention: use `keras.ops.dot_product_attention` when possible.
        dtype: dtype policy.

    Example:
    >>> encoder = CLIPTextEncoder(vocabulary_size=100, max_sequence_length=16, num_layers=2,
    ...                           num_heads=2, hidden_dim=32, intermediate_dim=64)
    >>> encoder(np.array([[98, 5, 7, 99, 0]]))["sequence_output"].shape
    (1, 5, 32)
    >>> sd2_style = CLIPTextEncoder(vocabulary_size=100, max_sequence_length=16, num_layers=2,
    ...                             num_heads=2, hidden_dim=32, intermediate_dim=64,
    ...                             sequence_output_layer=-2)
    """

    family = "clip"
    tower_keys = TEXT_KEYS
    config_keys = ("vocabulary_size", "max_sequence_length", "num_layers", "num_heads",
                   "hidden_dim", "intermediate_dim", "activation", "layer_norm_epsilon",
                   "eos_token_id", "sequence_output_layer", "dropout", "attention_dropout",
                   "use_fused_attention")
    huggingface_mapping = HUGGINGFACE_MAPPING

    def __init__(self, vocabulary_size=49408, max_sequence_length=77, num_layers=12,
                 num_heads=8, hidden_dim=512, intermediate_dim=2048, activation="quick_gelu",
                 layer_norm_epsilon=1e-5, eos_token_id=None, sequence_output_layer=-1,
                 dropout=0.0, attention_dropout=0.0, use_fused_attention=None, dtype=None,
                 **kwargs):
        check_transformer_dims(vocabulary_size=vocabulary_size,
                               max_sequence_length=max_sequence_length, num_layers=num_layers,
                               num_heads=num_heads, hidden_dim=hidden_dim,
                               intermediate_dim=intermediate_dim)
        if eos_token_id is not None and not 0 <= eos_token_id < vocabulary_size:
            raise ValueError(f"`eos_token_id` must be None (pool at each row's largest id) or "
                             f"an id in [0, {vocabulary_size}); received {eos_token_id!r}.")
        if (isinstance(sequence_output_layer, bool)
                or not isinstance(sequence_output_layer, (int, np.integer))
                or not -num_layers <= sequence_output_layer < num_layers):
            raise ValueError(
                f"`sequence_output_layer` must be a block index in [{-num_layers}, "
                f"{num_layers}) (-1: the last block, -2: the penultimate, as Stable "
                f"Diffusion 2); received {sequence_output_layer!r}.")
        selected = int(sequence_output_layer) % num_layers
        with keras.name_scope(_default_name(kwargs, "clip_text_encoder")):
            token_ids = keras.Input((None,), dtype="int32", name="token_ids")
            x = TransformerEmbedding(
                vocabulary_size, hidden_dim, max_sequence_length=max_sequence_length,
                layer_norm=False, dropout=dropout,
                initializer=keras.initializers.RandomNormal(stddev=0.02), dtype=dtype,
                name="embedding",
            )(token_ids)
            for i in range(num_layers):
                x = TransformerEncoderBlock(
                    num_heads=num_heads, intermediate_dim=intermediate_dim,
                    activation=activation, dropout=dropout,
                    attention_dropout=attention_dropout, normalize_first=True,
                    layer_norm_epsilon=layer_norm_epsilon,
                    use_fused_attention=use_fused_attention, dtype=dtype,
                    name=f"transformer_layer_{i}",
                )(x, use_causal_mask=True)
                if i == selected:
                    selected_state = x
            final_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon,
                                                         dtype=dtype, name="final_norm")
            x = final_norm(x)
            pooled = EndOfTextPooling(eos_token_id, dtype=dtype, name="pooling")(x, token_ids)
            # The same LayerNorm (its weights) on the chosen block, as SD2's OpenCLIP
            # embedder applies `ln_final` after stopping one block early.
            sequence = x if selected == num_layers - 1 else final_norm(selected_state)
        super().__init__(inputs=token_ids,
                         outputs={"sequence_output": sequence, "pooled_output": pooled},
                         dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.max_sequence_length = max_sequence_length
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.eos_token_id = eos_token_id
        self.sequence_output_layer = int(sequence_output_layer)
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.use_fused_attention = use_fused_attention


class LogitScaleConstraint(keras.constraints.Constraint):
    """Keeps the log temperature in [0, log(max_scale)] after every optimizer step."""

    def __init__(self, max_scale=MAX_LOGIT_SCALE):
        self.max_scale = max_scale

    def __call__(self, w):
        return ops.clip(w, 0.0, math.log(self.max_scale))

    def get_config(self):
        return {"max_scale": self.max_scale}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class CLIPLogits(keras.layers.Layer):
    """Similarity logits exp(t) * image_embedding @ text_embedding^T, t learned.

    `t` (variable `logit_scale`) starts at log(1/0.07) and, as in the paper, is clipped
    after each optimizer step so that the logits are never scaled by more than
    `max_logit_scale` (100). The forward pass uses exp(t) unclipped, as transformers, so
    a checkpoint's stored value (4.6052 in OpenAI's) gives its exact logits.

    Args:
        initial_logit_scale: initial t.
        max_logit_scale: the largest exp(t) training may reach; None: no clipping.

    Example:
    >>> logits = CLIPLogits()(np.eye(2, 4), np.eye(3, 4))   # [2 images, 3 texts]
    """

    def __init__(self, initial_logit_scale=INITIAL_LOGIT_SCALE,
                 max_logit_scale=MAX_LOGIT_SCALE, **kwargs):
        super().__init__(**kwargs)
        if max_logit_scale is not None and not max_logit_scale >= 1.0:
            raise ValueError("`max_logit_scale` must be None or >= 1 (exp of a non-negative "
                             f"log scale); received {max_logit_scale!r}.")
        self.initial_logit_scale = float(initial_logit_scale)
        self.max_logit_scale = max_logit_scale

    def build(self, image_embedding_shape, text_embedding_shape=None):
        constraint = (None if self.max_logit_scale is None
                      else LogitScaleConstraint(self.max_logit_scale))
        self.logit_scale = self.add_weight(
            name="logit_scale", shape=(),
            initializer=keras.initializers.Constant(self.initial_logit_scale),
            constraint=constraint,
        )
        self.built = True

    def scale(self):
        """exp(t), the factor applied to the cosine similarities."""
        return ops.exp(ops.cast(self.logit_scale, self.compute_dtype))

    def call(self, image_embedding, text_embedding):
        similarities = ops.matmul(image_embedding, ops.transpose(text_embedding))
        return ops.cast(self.scale(), similarities.dtype) * similarities

    def compute_output_shape(self, image_embedding_shape, text_embedding_shape):
        return (image_embedding_shape[0], text_embedding_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(initial_logit_scale=self.initial_logit_scale,
                      max_logit_scale=self.max_logit_scale)
        return config


def _normalize(x):
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class CLIPBackbone(Backbone):
    """CLIP: image and text towers projected into one space, with scaled similarities.

    Inputs a dict `{"images": [batch_i, H, W, C] floats, "token_ids": [batch_t, length]
    ints}`. Outputs a dict: `image_embedding` [batch_i, projection_dim] and
    `text_embedding` [batch_t, projection_dim] (projected, unit length) and
    `logits_per_image` [batch_i, batch_t] (exp(t) times their cosine similarities).
    `encode_image`, `encode_text` and `zero_shot_weights` / `zero_shot_logits` run one
    tower at a time.

    Args:
        image_size, patch_size, num_channels: the image tower's input.
        vision_num_layers, vision_num_heads, vision_hidden_dim, vision_intermediate_dim:
            image tower size.
        vocabulary_size, max_sequence_length: the text tower's input.
        text_num_layers, text_num_heads, text_hidden_dim, text_intermediate_dim: text
            tower size.
        projection_dim: width of the joint space.
        vision_activation, text_activation: feed-forward activations ("quick_gelu").
        eos_token_id: the text pooling id (None: each row's largest id, OpenAI's CLIP).
        layer_norm_epsilon, dropout, attention_dropout, use_fused_attention: both towers.
        initial_logit_scale, max_logit_scale: the temperature (`CLIPLogits`).
        dtype: dtype policy.

    Example:
    >>> clip = CLIPBackbone(image_size=32, patch_size=8, vision_num_layers=2,
    ...                     vision_num_heads=2, vision_hidden_dim=32, vision_intermediate_dim=64,
    ...                     vocabulary_size=100, max_sequence_length=16, text_num_layers=2,
    ...                     text_num_heads=2, text_hidden_dim=32, text_intermediate_dim=64,
    ...                     projection_dim=16)
    >>> out = clip({"images": np.zeros((2, 32, 32, 3)), "token_ids": np.ones((3, 8), "int32")})
    >>> out["logits_per_image"].shape
    (2, 3)
    """

    family = "clip"
    config_keys = (*VISION_KEYS, *TEXT_KEYS, "projection_dim", *SHARED_KEYS,
                   "initial_logit_scale", "max_logit_scale")
    huggingface_mapping = HUGGINGFACE_MAPPING

    def __init__(self, image_size=224, patch_size=32, num_channels=3, vision_num_layers=12,
                 vision_num_heads=12, vision_hidden_dim=768, vision_intermediate_dim=3072,
                 vision_activation="quick_gelu", vocabulary_size=49408,
                 max_sequence_length=77, text_num_layers=12, text_num_heads=8,
                 text_hidden_dim=512, text_intermediate_dim=2048, text_activation="quick_gelu",
                 eos_token_id=None, projection_dim=512, layer_norm_epsilon=1e-5, dropout=0.0,
                 attention_dropout=0.0, use_fused_attention=None,
                 initial_logit_scale=INITIAL_LOGIT_SCALE, max_logit_scale=MAX_LOGIT_SCALE,
                 dtype=None, **kwargs):
        check_positive_int("projection_dim", projection_dim)
        config = dict(locals())
        shared = {k: config[k] for k in SHARED_KEYS}
        vision = CLIPVisionEncoder(**{VISION_KEYS[k]: config[k] for k in VISION_KEYS},
                                   **shared, dtype=dtype, name="vision_encoder")
        text = CLIPTextEncoder(**{TEXT_KEYS[k]: config[k] for k in TEXT_KEYS}, **shared,
                               dtype=dtype, name="text_encoder")
        inputs = {"images": keras.Input(vision.input.shape[1:], name="images"),
                  "token_ids": keras.Input((None,), dtype="int32", name="token_ids")}
        image_features = keras.layers.Dense(
            projection_dim, use_bias=False, dtype=dtype, name="image_projection",
        )(vision(inputs["images"])["pooled_output"])
        text_features = keras.layers.Dense(
            projection_dim, use_bias=False, dtype=dtype, name="text_projection",
        )(text(inputs["token_ids"])["pooled_output"])
        image_embedding = _normalize(image_features)
        text_embedding = _normalize(text_features)
        logits = CLIPLogits(initial_logit_scale, max_logit_scale, dtype=dtype,
                            name="logit_scale")(image_embedding, text_embedding)
        super().__init__(inputs=inputs,
                         outputs={"image_embedding": image_embedding,
                                  "text_embedding": text_embedding,
                                  "logits_per_image": logits},
                         dtype=dtype, **kwargs)
        self.vision_encoder = vision
        self.text_encoder = text
        for key in (*VISION_KEYS, *TEXT_KEYS, *SHARED_KEYS):
            setattr(self, key, config[key])
        self.image_size = vision.image_size
        self.patch_size = vision.patch_size
        self.projection_dim = projection_dim
        self.initial_logit_scale = initial_logit_scale
        self.max_logit_scale = max_logit_scale

    def __call__(self, *args, **kwargs):
        # Before Keras' input-spec check, whose message says neither the size the model
        # was built for nor how to run at another one.
        inputs = args[0] if args else kwargs.get("inputs")
        if isinstance(inputs, dict) and "images" in inputs:
            check_image_shape(inputs["images"], self.image_size, self.num_channels)
        return super().__call__(*args, **kwargs)

    def with_image_size(self, image_size):
        """A copy of this model for another image resolution, the image tower's positions
        resized bicubically (see `CLIPVisionEncoder.with_image_size`); the text tower, the
        projections and the temperature are copied.

        Example:
        >>> clip_336 = CLIPBackbone.from_preset("clip-vit-large-patch14").with_image_size(336)
        """
        config = self.get_config()
        config["image_size"] = list(check_pair(image_size, "image_size"))
        new = self.__class__.from_config(config)
        copy_with_resized_positions(self, new, self.vision_encoder, new.vision_encoder)
        return new

    # One tower at a time --------------------------------------------------------------
    def _tower_model(self, kind):
        # Functional views of one tower and its projection, built once and kept out of
        # Keras' layer tracking (their weights are this model's own).
        views = self.__dict__.setdefault("_clip_tower_views", {})
        if kind not in views:
            key = "images" if kind == "image" else "token_ids"
            views[kind] = keras.Model(self.input[key], self.output[f"{kind}_embedding"],
                                      name=f"{self.name}_{kind}_view")
        return views[kind]

    def encode_image(self, images, batch_size=32):
        """Unit-length joint-space embeddings [n, projection_dim] of images, as numpy.

        Example:
        >>> clip.encode_image(np.zeros((4, 224, 224, 3), "float32")).shape
        (4, 512)
        """
        images = np.asarray(images, "float32")
        expected = tuple(self.input["images"].shape[1:])
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"`images` must have shape [n, {', '.join(map(str, expected))}] "
                             f"(channels last); received shape {images.shape}.")
        return _predict(self._tower_model("image"), images, batch_size)

    def encode_text(self, token_ids, batch_size=256):
        """Unit-length joint-space embeddings [n, projection_dim] of token id rows, as numpy.

        Pack strings with `keras_bigmodels.models.clip.pack_texts` first.

        Example:
        >>> clip.encode_text(pack_texts(["a photo of a dog"], tokenizer, 77)).shape
        (1, 512)
        """
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
            raise ValueError("`token_ids` must be an integer array [n, length]; received "
                             f"{token_ids.dtype} of shape {token_ids.shape}.")
        if token_ids.shape[1] > self.max_sequence_length:
            raise ValueError(f"`token_ids` has length {token_ids.shape[1]}, longer than "
                             f"max_sequence_length={self.max_sequence_length}.")
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= self.vocabulary_size):
            raise ValueError(f"`token_ids` must be in [0, {self.vocabulary_size}) "
                             f"(vocabulary_size); received ids in [{token_ids.min()}, "
                             f"{token_ids.max()}].")
        return _predict(self._tower_model("text"), token_ids.astype("int32"), batch_size)

    @property
    def logit_scale(self):
        """exp(t) as a Python float: the factor on cosine similarities."""
        return float(ops.convert_to_numpy(self.get_layer("logit_scale").scale()))

    def zero_shot_weights(self, class_names, tokenizer, templates=("a photo of a {}.",),
                          **pack_kwargs):
        """[classes, projection_dim] text classifier from class names and prompt templates.

        Each class is the unit-normalized mean of its templates' unit text embeddings
        (the CLIP paper's prompt ensembling).

        Args:
            class_names: the class names, in label order.
            tokenizer: what `pack_texts` takes (an object with `encode(text)`).
            templates: strings with one `{}` for the class name.
            **pack_kwargs: `start_token_id`, `end_token_id`, `pad_token_id` for
                `pack_texts`.

        Example:
        >>> weights = clip.zero_shot_weights(["cat", "dog"], tokenizer,
        ...                                  templates=("a photo of a {}.", "a {}."))
        """
        from keras_bigmodels.models.clip.tasks import pack_texts

        templates = [templates] if isinstance(templates, str) else list(templates)
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError("`templates` must be strings with exactly one `{}` for the class "
                             f"name; received {templates!r}.")
        class_names = list(class_names)
        if not class_names:
            raise ValueError("`class_names` must name at least one class.")
        prompts = [t.format(name) for name in class_names for t in templates]
        ids = pack_texts(prompts, tokenizer, self.max_sequence_length, **pack_kwargs)
        embeddings = self.encode_text(ids).reshape(len(class_names), len(templates), -1)
        mean = embeddings.mean(axis=1)
        return mean / np.linalg.norm(mean, axis=-1, keepdims=True)

    def zero_shot_logits(self, images, class_weights, batch_size=32):
        """[n, classes] logits exp(t) * cos(image, class) for `zero_shot_weights` output.

        Example:
        >>> predictions = clip.zero_shot_logits(images, weights).argmax(-1)
        """
        return self.logit_scale * self.encode_image(images, batch_size) @ np.asarray(
            class_weights).T


def _predict(model, x, batch_size):
    outputs = [keras.ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
               for i in range(0, len(x), batch_size)]
    if not outputs:
        return np.zeros((0, model.output.shape[-1]), "float32")
    return np.concatenate(outputs)
