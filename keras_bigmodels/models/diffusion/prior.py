"""A DALL-E 2 (unCLIP, Ramesh et al. 2022) diffusion prior: CLIP text embedding -> image embedding.

`PriorTransformer` is the denoiser: a small transformer over four tokens (the text
embedding, the timestep embedding, the noised image embedding and a learned query) whose
output at the query predicts the clean image embedding (x0, as the paper) or the noise.
`DiffusionPrior` trains it with `fit(text_embeddings, image_embeddings)` on the diffusion
loss and samples image embeddings with the shared DDIM/DDPM loop; `UnCLIPPipeline` chains
text encoder -> prior -> a decoder conditioned on the image embedding.
"""

import keras
import numpy as np
from keras import ops

from keras_bigmodels.backend import compile_function
from keras_bigmodels.generation.diffusion import (DiffusionSampler, check_sampling_arguments,
                                                  classifier_free_guidance, sampling_noise)
from keras_bigmodels.layers.transformer import TransformerEncoderBlock
from keras_bigmodels.layers.unet import TimestepEmbedding, Timesteps
from keras_bigmodels.models.base import SubclassedTask
from keras_bigmodels.models.diffusion.tasks import SeedStateSaving, prompt_token_ids
from keras_bigmodels.objectives.diffusion import NoiseSchedule
from keras_bigmodels.utils import check_finite_number, check_in, check_positive_int

PRIOR_PREDICTION_TYPES = ("sample", "epsilon")
_NUM_TOKENS = 4


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class PriorTransformer(keras.Model):
    """The unCLIP prior's denoiser: [noisy_image_embedding, timesteps, text_embedding] -> [b, d].

    Tokens: the projected text embedding, the timestep embedding, the projected noised image
    embedding and a learned query, plus learned positions; pre-norm transformer blocks with a
    causal mask (as the paper's decoder-only prior), then the query's output projected back
    to the embedding width.

    Args:
        embedding_dim: width of the CLIP embeddings (text and image).
        hidden_dim, num_layers, num_heads, intermediate_dim: transformer size.

    Example:
    >>> prior = PriorTransformer(embedding_dim=16, hidden_dim=32, num_layers=2, num_heads=2)
    >>> prior([np.zeros((2, 16)), np.array([3, 9]), np.zeros((2, 16))]).shape
    (2, 16)
    """

    def __init__(self, embedding_dim, hidden_dim=64, num_layers=2, num_heads=2,
                 intermediate_dim=None, name="prior_transformer", **kwargs):
        super().__init__(name=name, **kwargs)
        for key, value in (("embedding_dim", embedding_dim), ("hidden_dim", hidden_dim),
                           ("num_layers", num_layers), ("num_heads", num_heads)):
            check_positive_int(key, value)
        if hidden_dim % num_heads:
            raise ValueError(f"`num_heads`={num_heads} must divide `hidden_dim`={hidden_dim}.")
        intermediate_dim = intermediate_dim or 4 * hidden_dim
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.text_projection = keras.layers.Dense(hidden_dim, name="text_projection")
        self.image_projection = keras.layers.Dense(hidden_dim, name="image_projection")
        self.time_proj = Timesteps(hidden_dim, name="time_proj")
        self.time_embedding = TimestepEmbedding(hidden_dim, name="time_embedding")
        self.blocks = [TransformerEncoderBlock(num_heads=num_heads,
                                               intermediate_dim=intermediate_dim,
                                               normalize_first=True, name=f"block_{i}")
                       for i in range(num_layers)]
        self.final_norm = keras.layers.LayerNormalization(name="final_norm")
        self.output_projection = keras.layers.Dense(embedding_dim, name="output_projection")
        self.query = self.add_weight(shape=(hidden_dim,), initializer="zeros", name="query")
        self.positions = self.add_weight(
            shape=(_NUM_TOKENS, hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02), name="positions")
        self([ops.zeros((1, embedding_dim)), ops.zeros((1,), "int32"),
              ops.zeros((1, embedding_dim))])

    def call(self, inputs, training=None):
        noisy, timesteps, text = inputs
        batch = ops.shape(noisy)[0]
        time = self.time_embedding(self.time_proj(ops.reshape(timesteps, (-1,))))
        query = ops.broadcast_to(ops.cast(self.query, time.dtype)[None], ops.shape(time))
        tokens = ops.stack([self.text_projection(text), time, self.image_projection(noisy),
                            query], axis=1)
        x = tokens + ops.cast(self.positions, tokens.dtype)[None]
        for block in self.blocks:
            x = block(x, use_causal_mask=True, training=training)
        x = self.final_norm(x[:, -1])
        del batch
        return self.output_projection(x)

    def get_config(self):
        return {"name": self.name, "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim}


def _check_embeddings(name, value, dim):
    array = np.asarray(keras.ops.convert_to_numpy(value) if not isinstance(value, np.ndarray)
                       else value)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != dim or not np.issubdtype(
            array.dtype, np.floating):
        raise ValueError(f"`{name}` must be float embeddings [batch, {dim}] (embedding_dim); "
                         f"received {array.dtype} of shape {array.shape}.")
    return array.astype("float32")


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class DiffusionPrior(SeedStateSaving, SubclassedTask):
    """unCLIP's diffusion prior: trains a `PriorTransformer` to map text to image embeddings.

    `fit(text_embeddings, image_embeddings)` noises the image embeddings with the forward
    process and regresses the clean embedding ("sample", as the paper) or the noise
    ("epsilon"); a `condition_dropout` share of rows sees a zero text embedding, the null
    condition of classifier-free guidance. `generate(text_embeddings)` runs the reverse
    process (DDIM or DDPM) as one compiled loop.

    Args:
        denoiser: a `PriorTransformer` (or a model with the same call and `embedding_dim`).
        num_train_timesteps, beta_schedule: the `NoiseSchedule` ("cosine" as the paper).
        prediction_type: "sample" (x0) or "epsilon".
        condition_dropout: share of training rows with the text embedding zeroed.
        learning_rate: the default AdamW optimizer's learning rate.
        seed: seed of the training noise and timesteps.

    Example:
    >>> prior = DiffusionPrior(PriorTransformer(embedding_dim=16, hidden_dim=32))
    >>> prior.fit(text_embeddings, image_embeddings, epochs=5, batch_size=32)
    >>> prior.generate(text_embeddings[:4], num_steps=10, seed=0).shape
    (4, 16)
    """

    max_compiled_functions = 8
    inputs = None

    def __init__(self, denoiser, num_train_timesteps=1000, beta_schedule="cosine",
                 prediction_type="sample", condition_dropout=0.1, learning_rate=1e-3,
                 seed=None, name="diffusion_prior", **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(denoiser, keras.Model) or not getattr(denoiser, "embedding_dim", 0):
            raise ValueError("`denoiser` must be a PriorTransformer (a keras.Model with "
                             f"`embedding_dim`); received {type(denoiser).__name__}.")
        check_in("prediction_type", prediction_type, PRIOR_PREDICTION_TYPES)
        check_finite_number("condition_dropout", condition_dropout)
        if not 0 <= condition_dropout < 1:
            raise ValueError(f"`condition_dropout` must be in [0, 1); received "
                             f"{condition_dropout!r}.")
        self.backbone = denoiser
        self.embedding_dim = int(denoiser.embedding_dim)
        self.schedule = NoiseSchedule(num_train_timesteps, beta_schedule)
        self.prediction_type = prediction_type
        self.condition_dropout = float(condition_dropout)
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="prior_noise")
        self.built = True
        self.compile()

    def compile(self, optimizer=None, **kwargs):
        """Compile with AdamW at `learning_rate` by default; the loss is the diffusion MSE."""
        if kwargs.pop("loss", None) is not None:
            raise ValueError("`loss` is fixed for DiffusionPrior (the diffusion MSE).")
        if optimizer is None:
            optimizer = keras.optimizers.AdamW(self.learning_rate, weight_decay=0.0)
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs, training=None):
        return inputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """MSE between the denoiser's output and the clean image embedding y (or the noise),
        given text embeddings x."""
        if y is None:
            raise ValueError("DiffusionPrior trains on (text_embeddings, image_embeddings): "
                             "pass the image embeddings as `y`.")
        text = ops.cast(x, "float32")
        image = ops.cast(y, "float32")
        batch = ops.shape(image)[0]
        timesteps = keras.random.randint((batch,), 0, self.schedule.num_train_timesteps,
                                         seed=self.seed_generator, dtype="int32")
        noise = keras.random.normal(ops.shape(image), seed=self.seed_generator)
        noisy = self.schedule.add_noise(image, noise, timesteps)
        if self.condition_dropout > 0:
            keep = ops.greater_equal(keras.random.uniform((batch, 1), seed=self.seed_generator),
                                     self.condition_dropout)
            text = ops.where(keep, text, ops.zeros_like(text))
        prediction = ops.cast(self.backbone([noisy, timesteps, text], training=training),
                              "float32")
        target = image if self.prediction_type == "sample" else noise
        return ops.mean(ops.square(prediction - target))

    def fit(self, x=None, y=None, *args, **kwargs):
        if x is not None and not isinstance(x, (dict, keras.utils.PyDataset)) and hasattr(
                x, "shape"):
            _check_embeddings("x", x, self.embedding_dim)
            if y is None:
                raise ValueError("`y` (the image embeddings) is required.")
            _check_embeddings("y", y, self.embedding_dim)
        return super().fit(x, y, *args, **kwargs)

    def _sample_function(self, sampler, num_steps, guided):
        key = (sampler.sampler, sampler.eta, num_steps, guided)
        table = self.__dict__.setdefault("_sample_functions", {})
        if key in table:
            return table[key]
        timesteps, previous = sampler.timesteps(num_steps)
        backbone = self.backbone

        def network(x, t, conditions):
            return ops.cast(backbone([x, t, conditions[0]], training=False), "float32")

        def generate(initial_noise, noise_keys, text, guidance_scale):
            def denoise(x, t):
                if not guided:
                    return network(x, t, (text,))
                return classifier_free_guidance(network, x, t, (text,),
                                                (ops.zeros_like(text),), guidance_scale)

            return sampler.sample(denoise, initial_noise, None, timesteps, previous,
                                  noise_keys)

        function = compile_function(generate, backbone.variables)
        if len(table) >= self.max_compiled_functions:
            table.pop(next(iter(table)))
        table[key] = function
        return function

    def generate(self, text_embeddings, num_steps=64, guidance_scale=1.0, seed=None,
                 sampler="ddim", eta=0.0):
        """Image embeddings [batch, embedding_dim] (numpy float32) for text embeddings.

        Args:
            text_embeddings: float [batch, embedding_dim].
            num_steps: sampling steps, 1 to num_train_timesteps.
            guidance_scale: classifier-free guidance against the zero text embedding, >= 0.
            seed: an int (row i draws from [seed, i]), one int per row, or None.
            sampler: "ddim" or "ddpm"; eta: DDIM's noise.

        Example:
        >>> prior.generate(np.zeros((2, 16), "float32"), num_steps=10, seed=0).shape
        (2, 16)
        """
        text = _check_embeddings("text_embeddings", text_embeddings, self.embedding_dim)
        check_sampling_arguments(self.schedule, sampler, num_steps, guidance_scale)
        step_sampler = DiffusionSampler(self.schedule, sampler, eta=eta,
                                        prediction_type=self.prediction_type,
                                        clip_sample=False)
        function = self._sample_function(step_sampler, int(num_steps), guidance_scale != 1.0)
        # Each step's noise is drawn inside the loop from one key per row.
        initial, noise_keys = sampling_noise(seed, text.shape[0], (self.embedding_dim,))
        out = function(ops.convert_to_tensor(initial), ops.convert_to_tensor(noise_keys, "int32"),
                       ops.convert_to_tensor(text),
                       ops.convert_to_tensor(float(guidance_scale), "float32"))
        return ops.convert_to_numpy(out)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "denoiser": keras.saving.serialize_keras_object(self.backbone),
                "num_train_timesteps": self.schedule.num_train_timesteps,
                "beta_schedule": self.schedule.beta_schedule,
                "prediction_type": self.prediction_type,
                "condition_dropout": self.condition_dropout,
                "learning_rate": self.learning_rate, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("denoiser"), dict):
            config["denoiser"] = keras.saving.deserialize_keras_object(config["denoiser"])
        return cls(**config)


class UnCLIPPipeline:
    """Text -> CLIP text embedding -> prior -> image embedding -> decoder -> images.

    Not a Keras model: it chains three separately trained models, each with its own
    optimizer state, and has no single call or loss of its own. `save(directory)` writes
    each part as its own `.keras` file (so each loads, and resumes training, with
    `keras.models.load_model`) plus a small JSON of the pipeline's settings;
    `UnCLIPPipeline.load(directory)` reassembles them.

    Args:
        text_encoder: a `CLIPBackbone` (its `encode_text`: unit-length joint-space
            embeddings) or a `CLIPTextEncoder` (its `pooled_output`).
        prior: a trained `DiffusionPrior` over that embedding width.
        decoder: an `ImageEmbeddingDecoder` conditioned on image embeddings of that width.
        tokenizer, sequence_length: pack string prompts with `pack_texts` (optional).

    Example:
    >>> pipeline = UnCLIPPipeline(clip, prior, decoder, tokenizer, sequence_length=16)
    >>> pipeline.generate(["a red square"], num_steps=10, seed=0).shape
    (1, 16, 16, 3)
    """

    def __init__(self, text_encoder, prior, decoder, tokenizer=None, sequence_length=None):
        if not isinstance(prior, DiffusionPrior):
            raise ValueError(f"`prior` must be a DiffusionPrior; received "
                             f"{type(prior).__name__}.")
        if getattr(decoder, "condition_dim", None) != prior.embedding_dim:
            raise ValueError("`decoder` must be an ImageEmbeddingDecoder whose condition_dim "
                             f"equals the prior's embedding_dim {prior.embedding_dim}; received "
                             f"{getattr(decoder, 'condition_dim', type(decoder).__name__)}.")
        self.text_encoder = text_encoder
        self.prior = prior
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length

    PART_FILES = {"text_encoder": "text_encoder.keras", "prior": "prior.keras",
                  "decoder": "decoder.keras"}
    SETTINGS_FILE = "unclip_pipeline.json"

    def save(self, directory):
        """Write the three parts as `.keras` files and the settings as JSON into `directory`.

        The tokenizer is not saved; pass it to `load`.

        Example:
        >>> pipeline.save("unclip/")
        >>> UnCLIPPipeline.load("unclip/", tokenizer=tokenizer)
        """
        import json
        import os

        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        for attribute, file in self.PART_FILES.items():
            getattr(self, attribute).save(os.path.join(directory, file))
        with open(os.path.join(directory, self.SETTINGS_FILE), "w") as f:
            json.dump({"sequence_length": self.sequence_length,
                       "parts": self.PART_FILES}, f, indent=1)

    @classmethod
    def load(cls, directory, tokenizer=None):
        """The pipeline `save(directory)` wrote (each part through `keras.models.load_model`).

        Args:
            directory: the directory written by `save`.
            tokenizer: packs string prompts (not saved with the pipeline).

        Example:
        >>> pipeline = UnCLIPPipeline.load("unclip/", tokenizer=tokenizer)
        """
        import json
        import os

        directory = os.fspath(directory)
        settings_path = os.path.join(directory, cls.SETTINGS_FILE)
        if not os.path.isfile(settings_path):
            raise ValueError(f"`directory` {directory!r} has no {cls.SETTINGS_FILE}; pass a "
                             "directory written by UnCLIPPipeline.save.")
        with open(settings_path) as f:
            settings = json.load(f)
        parts = {attribute: keras.models.load_model(os.path.join(directory, file))
                 for attribute, file in settings["parts"].items()}
        return cls(parts["text_encoder"], parts["prior"], parts["decoder"], tokenizer=tokenizer,
                   sequence_length=settings["sequence_length"])

    def encode_text(self, prompts):
        """CLIP text embeddings [n, embedding_dim] of strings or token id rows."""
        token_ids = prompt_token_ids(prompts, self.tokenizer, self.sequence_length)
        if hasattr(self.text_encoder, "encode_text"):
            embeddings = self.text_encoder.encode_text(token_ids)
        else:
            embeddings = self.text_encoder(token_ids, training=False)["pooled_output"]
        return np.asarray(ops.convert_to_numpy(embeddings), "float32")

    def generate(self, prompts, num_steps=25, prior_num_steps=25, guidance_scale=1.0,
                 prior_guidance_scale=1.0, seed=None):
        """Images [n, height, width, channels] in [0, 1] for prompts.

        Example:
        >>> pipeline.generate(token_ids, num_steps=10, prior_num_steps=10, seed=0)
        """
        text = self.encode_text(prompts)
        image_embeddings = self.prior.generate(text, num_steps=prior_num_steps,
                                               guidance_scale=prior_guidance_scale, seed=seed)
        return self.decoder.generate(image_embeddings, num_steps=num_steps,
                                     guidance_scale=guidance_scale, seed=seed)
