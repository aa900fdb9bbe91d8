"""Trainable diffusion tasks: `DiffusionModel` (pixel space) over any denoiser network.

`model.fit(images)` (or `model.fit(images, labels)`) trains the denoiser on the diffusion
loss: each step draws timesteps and noise with `keras.random` from the task's
`SeedGenerator`, noises the images with the forward process, and regresses the noise
(or v). The work happens in `compute_loss`, which every backend's `train_step` calls inside
its gradient computation, so one implementation trains on JAX, TensorFlow and PyTorch.

The context-conditioned tasks (`LatentTextToImage`, `ImageEmbeddingDecoder`) are the same
model with other conditions: each task says how its raw conditions (class labels, text
states, image embeddings) are read from a batch, what their null (classifier-free guidance)
value is, and how they become the denoiser's extra inputs; training, condition dropout,
EMA, the compiled sampling loop and guidance are written once, here.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_bigmodels.backend import compile_function
from keras_bigmodels.generation.diffusion import (DiffusionSampler, check_sampling_arguments,
                                                  classifier_free_guidance, sampling_noise)
from keras_bigmodels.models.base import EagerTrainingStep, SubclassedTask
from keras_bigmodels.objectives.diffusion import PREDICTION_TYPES, NoiseSchedule
from keras_bigmodels.utils import check_finite_number, check_in, check_positive_int


def _image_shape(value):
    shape = tuple(value) if isinstance(value, (list, tuple)) else None
    if shape is None or len(shape) != 3 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in shape):
        raise ValueError("`image_shape` must be (height, width, channels) of positive ints "
                         f"(channels_last); received {value!r}.")
    return tuple(int(v) for v in shape)


class SeedStateSaving:
    """Saves the task's `seed_generator` state with its weights.

    Keras does not write a `SeedGenerator`'s state into a `.keras` file, so a reloaded
    diffusion task would draw its training noise and timesteps from the start of the
    stream again; with this mixin it continues where the saved one stopped (the same loss
    on the same batch).
    """

    _seed_state_key = "seed_generator_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._seed_state_key] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        keys = list(store.keys())
        super().load_own_variables({k: store[k] for k in keys if k != self._seed_state_key})
        if self._seed_state_key in keys:  # files written before this mixin lack it
            self.seed_generator.state.assign(np.asarray(store[self._seed_state_key]))


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class DiffusionModel(EagerTrainingStep, SeedStateSaving, SubclassedTask):
    """A pixel-space diffusion model (DDPM training, DDPM/DDIM sampling) on any denoiser.

    The denoiser is a built Keras model called as `denoiser([noisy_images, timesteps])`, or
    `denoiser([noisy_images, timesteps, class_labels])` for a class-conditioned model
    (`UNet2D`, `DiT`). Images are channels_last in [0, 1]; the model trains on them scaled
    to [-1, 1], as DDPM does, and `generate` returns images in [0, 1].

    Classifier-free guidance (Ho & Salimans 2022): with `num_classes` set, the denoiser
    embeds `num_classes + 1` classes; id `num_classes` is the "no class" label, which
    replaces the true label in a `condition_dropout` share of training rows, and which
    `generate(guidance_scale=s)` contrasts with: uncond + s * (cond - uncond).

    Args:
        denoiser: the network (built; its `in_channels`, `num_classes` and
            `downsampling_factor` attributes are checked when present).
        image_shape: (height, width, channels) of the images.
        num_classes: real classes for a class-conditioned model; None: unconditional.
        num_train_timesteps, beta_schedule, beta_start, beta_end: the `NoiseSchedule`.
        prediction_type: "epsilon" (predict the noise) or "v_prediction".
        condition_dropout: share of training rows whose label becomes the null class.
        ema_decay: keep an exponential moving average of the denoiser's weights (with the
            warm-up min(decay, (1 + n) / (10 + n)) over update n), used by `generate`;
            None: no EMA.
        clip_sample: clip the predicted clean image to [-1, 1] at each sampling step.
        learning_rate: the default AdamW optimizer's learning rate.
        seed: seed of the training noise and timesteps.

    Example:
    >>> unet = UNet2D(in_channels=1, out_channels=1, block_out_channels=(32, 64),
    ...               attention_levels=(False, True), norm_num_groups=8, num_classes=11)
    >>> model = DiffusionModel(unet, image_shape=(16, 16, 1), num_classes=10, ema_decay=0.999)
    >>> model.fit(images, labels, epochs=10, batch_size=64)
    >>> model.generate([3, 7], num_steps=50, guidance_scale=2.0, seed=0).shape
    (2, 16, 16, 1)
    """

    max_compiled_functions = 8
    # Not a functional model: no symbolic inputs for the host-side data checks to name.
    inputs = None

    def __init__(self, denoiser, image_shape, num_classes=None, num_train_timesteps=1000,
                 beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                 prediction_type="epsilon", condition_dropout=0.1, ema_decay=None,
                 clip_sample=True, learning_rate=2e-4, seed=None, name="diffusion_model",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self._init_diffusion(image_shape, num_train_timesteps, beta_schedule, beta_start,
                             beta_end, prediction_type, condition_dropout, ema_decay,
                             learning_rate, seed)
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        self._check_denoiser(denoiser, num_classes, condition_dropout)
        if not denoiser.trainable_variables:
            # Build it on one zero batch: the EMA copies need its variables.
            inputs = [ops.zeros((1,) + self.image_shape), ops.zeros((1,), "int32")]
            denoiser(inputs + ([ops.zeros((1,), "int32")] if num_classes else []))
        self.backbone = denoiser
        self.num_classes = num_classes
        self.sample_shape = self.image_shape
        self.clip_sample = bool(clip_sample)
        self._finish_init()

    def _init_diffusion(self, image_shape, num_train_timesteps, beta_schedule, beta_start,
                        beta_end, prediction_type, condition_dropout, ema_decay,
                        learning_rate, seed):
        """The checks and state every diffusion task shares (schedule, dropout, EMA, seed)."""
        self.image_shape = _image_shape(image_shape)
        self.schedule = NoiseSchedule(num_train_timesteps, beta_schedule, beta_start, beta_end)
        check_in("prediction_type", prediction_type, PREDICTION_TYPES)
        check_finite_number("condition_dropout", condition_dropout)
        if not 0 <= condition_dropout < 1:
            raise ValueError(f"`condition_dropout` must be in [0, 1); received "
                             f"{condition_dropout!r}.")
        if ema_decay is not None:
            check_finite_number("ema_decay", ema_decay)
            if not 0 < ema_decay < 1:
                raise ValueError(f"`ema_decay` must be in (0, 1) or None; received "
                                 f"{ema_decay!r}.")
        self.prediction_type = prediction_type
        self.condition_dropout = float(condition_dropout)
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="diffusion_noise")

    def _finish_init(self):
        self._init_ema()
        self.built = True
        self.compile()

    def _init_ema(self):
        if self.ema_decay is None:
            return
        self.ema_updates = self.add_weight(shape=(), initializer="zeros", dtype="float32",
                                           trainable=False, name="ema_updates")
        variables = self._ema_sources()
        self.ema_weights = [
            self.add_weight(shape=v.shape, initializer="zeros", dtype=v.dtype,
                            trainable=False, name=f"ema_{i}")
            for i, v in enumerate(variables)]
        for ema, variable in zip(self.ema_weights, variables):
            # A host copy: JAX would otherwise share (and donate twice) one buffer.
            ema.assign(ops.convert_to_numpy(variable))

    @property
    def denoiser(self):
        return self.backbone

    @property
    def null_class(self):
        """The label id meaning "no class" (classifier-free guidance), or None."""
        return self.num_classes

    def _check_denoiser(self, denoiser, num_classes, condition_dropout):
        if not isinstance(denoiser, keras.Model):
            raise ValueError("`denoiser` must be a keras.Model called as "
                             "denoiser([noisy_images, timesteps(, class_labels)]); received "
                             f"{type(denoiser).__name__}.")
        height, width, channels = self.image_shape
        in_channels = getattr(denoiser, "in_channels", None)
        if in_channels is not None and in_channels != channels:
            raise ValueError(f"`image_shape` has {channels} channels; the denoiser takes "
                             f"in_channels={in_channels}.")
        out_channels = getattr(denoiser, "out_channels", None)
        if out_channels is not None and out_channels != channels:
            raise ValueError(f"`image_shape` has {channels} channels; the denoiser predicts "
                             f"out_channels={out_channels}.")
        size = getattr(denoiser, "image_size", None)
        if size is not None and tuple(size) != (height, width):
            raise ValueError(f"`image_shape` is {height}x{width}; the denoiser takes "
                             f"image_size={tuple(size)}.")
        factor = getattr(denoiser, "downsampling_factor", None)
        if factor and (height % factor or width % factor):
            raise ValueError(f"`image_shape` {height}x{width} is not divisible by the "
                             f"denoiser's downsampling factor {factor}.")
        embedded = getattr(denoiser, "num_classes", None)
        if num_classes is None and embedded:
            raise ValueError(f"The denoiser embeds {embedded} classes: pass `num_classes` "
                             f"(the real classes; {embedded - 1} with the null class).")
        if num_classes is not None:
            if embedded is not None and embedded != num_classes + 1:
                raise ValueError(
                    f"`num_classes`={num_classes} needs a denoiser embedding "
                    f"num_classes + 1 = {num_classes + 1} classes (the last is the null class "
                    f"of classifier-free guidance); the denoiser embeds {embedded}.")

    # What a task conditions on (subclasses override) ----------------------------------
    def _denoising_layers(self):
        """The trained layers that make a prediction: EMA'd and read by sampling."""
        return [self.backbone]

    def _ema_sources(self):
        return [v for layer in self._denoising_layers() for v in layer.trainable_variables]

    def _sampling_variables(self):
        return [v for layer in self._denoising_layers() for v in layer.variables]

    def _condition_inputs(self, y, training=False):
        """The raw conditions of a training batch, a tuple of tensors [batch, ...]."""
        if self.num_classes is None:
            return ()
        if y is None:
            raise ValueError("A class-conditioned DiffusionModel trains on (images, "
                             "labels): pass the labels as `y`.")
        return (ops.reshape(ops.cast(y, "int32"), (-1,)),)

    def _null_inputs(self, conditions):
        """The null condition (classifier-free guidance) shaped like `conditions`."""
        return tuple(ops.full_like(c, self.null_class) for c in conditions)

    def _network_inputs(self, conditions, training=False):
        """The denoiser's inputs after [noisy, timesteps], from raw conditions."""
        return list(conditions)

    def _encode(self, images):
        """Images in [0, 1] -> the samples the denoiser works on ([-1, 1] pixels)."""
        return ops.cast(images, "float32") * 2.0 - 1.0

    def _decode(self, samples):
        return ops.clip((samples + 1.0) / 2.0, 0.0, 1.0)

    # Training -------------------------------------------------------------------------
    def compile(self, optimizer=None, **kwargs):
        """Compile with AdamW at `learning_rate` (weight decay 0) by default; the loss is the
        diffusion MSE (`compute_loss`), so `loss` is not an argument.

        Example:
        >>> model.compile(keras.optimizers.Adam(1e-3))
        """
        if kwargs.get("loss") is not None:
            raise ValueError(f"`loss` is fixed for {type(self).__name__} (the diffusion MSE "
                             f"on the {self.prediction_type} target); received "
                             f"{kwargs['loss']!r}.")
        kwargs.pop("loss", None)
        if optimizer is None:
            optimizer = keras.optimizers.AdamW(self.learning_rate, weight_decay=0.0)
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs, training=None):
        # The trainer calls the model on the images before `compute_loss`; the noising and
        # the denoiser run there, where the conditions (y) are available too.
        return inputs

    def label_range(self):
        return None if self.num_classes is None else (0, self.num_classes)

    def _split(self, x, y):
        return x, y

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The diffusion loss of a batch of images x in [0, 1] (conditions y if conditional):
        mean squared error between the denoiser's output and the noise (or v)."""
        x, y = self._split(x, y)
        samples = self._encode(x)
        batch = ops.shape(samples)[0]
        timesteps = keras.random.randint((batch,), 0, self.schedule.num_train_timesteps,
                                         seed=self.seed_generator, dtype="int32")
        noise = keras.random.normal(ops.shape(samples), seed=self.seed_generator)
        noisy = self.schedule.add_noise(samples, noise, timesteps)
        conditions = self._condition_inputs(y, training=training)
        if conditions and self.condition_dropout > 0:
            # One draw per row drops all of its conditions together.
            keep = ops.greater_equal(keras.random.uniform((batch,), seed=self.seed_generator),
                                     self.condition_dropout)
            conditions = tuple(
                ops.where(ops.reshape(keep, (-1,) + (1,) * (len(c.shape) - 1)), c, null)
                for c, null in zip(conditions, self._null_inputs(conditions)))
        inputs = [noisy, timesteps, *self._network_inputs(conditions, training=training)]
        prediction = ops.cast(self.backbone(inputs, training=training), "float32")
        target = self.schedule.target(self.prediction_type, samples, noise, timesteps)
        loss = ops.mean(ops.square(prediction - target))
        if training and self.ema_decay is not None:
            self._update_ema()
        return loss

    def _update_ema(self):
        # Runs inside the loss computation, before the optimizer applies this step's update:
        # the average trails by one step, which lets one backend-independent compute_loss
        # carry it (JAX threads the new values out as non-trainable state).
        updates = self.ema_updates + 1.0
        decay = ops.minimum(self.ema_decay, (1.0 + updates) / (10.0 + updates))
        for ema, variable in zip(self.ema_weights, self._ema_sources()):
            value = ops.stop_gradient(ops.convert_to_tensor(variable))
            ema.assign(decay * ema + (1.0 - decay) * ops.cast(value, ema.dtype))
        self.ema_updates.assign(updates)

    def fit(self, x=None, y=None, *args, **kwargs):
        images, _ = self._split(x, y)
        self._check_images(images)
        return super().fit(x, y, *args, **kwargs)

    def _check_images(self, x):
        shape = getattr(x, "shape", None)
        if shape is None or isinstance(x, dict):
            return
        shape = tuple(shape)
        if len(shape) != 4 or tuple(shape[1:]) != self.image_shape:
            raise ValueError(f"`x` must be images [batch, {', '.join(map(str, self.image_shape))}]"
                             f" (image_shape, channels_last); received shape {shape}.")

    # Sampling --------------------------------------------------------------------------
    def _sampler(self, sampler, eta):
        return DiffusionSampler(self.schedule, sampler, eta=eta,
                                prediction_type=self.prediction_type,
                                clip_sample=self.clip_sample)

    def _sample_function(self, sampler, num_steps, guided, num_conditions):
        """The compiled reverse process: (initial noise, noise keys, conditions, null
        conditions, guidance scale) -> images in [0, 1]; cached per configuration."""
        key = (sampler.sampler, sampler.eta, num_steps, guided, num_conditions)
        table = self.__dict__.setdefault("_sample_functions", {})
        if key in table:
            return table[key]
        timesteps, previous = sampler.timesteps(num_steps)
        backbone = self.backbone

        def network(x, t, conditions):
            inputs = [x, t, *self._network_inputs(conditions)]
            return ops.cast(backbone(inputs, training=False), "float32")

        def generate(initial_noise, noise_keys, conditions, null_conditions, guidance_scale):
            self.__dict__["_sample_traces"] = self.__dict__.get("_sample_traces", 0) + 1

            def denoise(x, t):
                if not guided:
                    return network(x, t, conditions)
                return classifier_free_guidance(network, x, t, conditions, null_conditions,
                                                guidance_scale)

            samples = sampler.sample(denoise, initial_noise, None, timesteps, previous,
                                     noise_keys)
            return self._decode(samples)

        function = compile_function(generate, self._sampling_variables())
        if len(table) >= self.max_compiled_functions:
            table.pop(next(iter(table)))
        table[key] = function
        return function

    @property
    def sample_traces(self):
        """How often a sampling function was traced (on torch, which runs eagerly: called)."""
        return self.__dict__.get("_sample_traces", 0)

    @contextlib.contextmanager
    def _weights_for_sampling(self, use_ema):
        """The EMA weights swapped in for the duration (when kept and asked for)."""
        if not (use_ema and self.ema_decay is not None):
            yield
            return
        variables = self._ema_sources()
        saved = [ops.convert_to_numpy(v) for v in variables]
        for variable, ema in zip(variables, self.ema_weights):
            variable.assign(ops.convert_to_numpy(ema))
        try:
            yield
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)

    def _sample(self, conditions, batch, num_steps, guidance_scale, seed, sampler, eta,
                use_ema, guided):
        """Images (numpy) from host conditions (a tuple of arrays [batch, ...])."""
        check_sampling_arguments(self.schedule, sampler, num_steps, guidance_scale)
        step_sampler = self._sampler(sampler, eta)
        function = self._sample_function(step_sampler, int(num_steps), guided,
                                         len(conditions))
        # The initial noise and one key per row; each step's noise is drawn in the loop.
        initial, noise_keys = sampling_noise(seed, batch, self.sample_shape)
        conditions = tuple(ops.convert_to_tensor(c) for c in conditions)
        null_conditions = self._null_inputs(conditions)
        with self._weights_for_sampling(use_ema):
            images = function(ops.convert_to_tensor(initial),
                              ops.convert_to_tensor(noise_keys, "int32"), conditions,
                              null_conditions,
                              ops.convert_to_tensor(float(guidance_scale), "float32"))
            return ops.convert_to_numpy(images)

    def generate(self, labels=None, num_images=None, num_steps=50, guidance_scale=1.0,
                 seed=None, sampler="ddim", eta=0.0, use_ema=True):
        """Sample images in [0, 1], [batch, height, width, channels] numpy float32.

        The whole reverse process runs as one compiled loop (JAX, TensorFlow; eager without
        gradients on torch). A row's image depends only on its seed and label.

        Args:
            labels: class ids (a list or 1-D int array) for a class-conditioned model; None
                samples `num_images` without a class (the null class, if trained with it).
            num_images: the number of images when `labels` is None.
            num_steps: sampling steps, 1 to num_train_timesteps (DDIM skips timesteps;
                DDPM at num_train_timesteps is the original ancestral sampler).
            guidance_scale: classifier-free guidance, >= 0: 1 is the plain conditional
                model, 0 the unconditional one, > 1 sharpens toward the class.
            seed: an int (row i draws from [seed, i]), one int per image, or None.
            sampler: "ddim" or "ddpm".
            eta: DDIM's noise (0: deterministic).
            use_ema: sample with the EMA weights when the model keeps them.

        Example:
        >>> model.generate([0, 1, 2], num_steps=25, guidance_scale=3.0, seed=0)
        """
        check_sampling_arguments(self.schedule, sampler, num_steps, guidance_scale)
        conditional = self.num_classes is not None
        if labels is not None:
            if not conditional:
                raise ValueError("`labels` need a class-conditioned model (num_classes set); "
                                 "pass `num_images` instead.")
            labels = np.asarray(keras.ops.convert_to_numpy(labels)).reshape(-1)
            if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"`labels` must be a non-empty list of int class ids; "
                                 f"received {labels!r}.")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ValueError(f"`labels` must be class ids in [0, {self.num_classes - 1}]; "
                                 f"received {labels.min()}..{labels.max()}.")
            batch = labels.size
        else:
            check_positive_int("num_images", num_images)
            batch = int(num_images)
            if conditional:
                labels = np.full((batch,), self.null_class)
        if conditional:
            # Guidance against the null class is a no-op when every row is the null class.
            guided = guidance_scale != 1.0 and not np.all(labels == self.null_class)
            conditions = (labels.astype("int32"),)
        else:
            if guidance_scale != 1.0:
                raise ValueError("`guidance_scale` needs a class-conditioned model; an "
                                 f"unconditional one samples at 1.0 (received {guidance_scale}).")
            guided = False
            conditions = ()
        return self._sample(conditions, batch, num_steps, guidance_scale, seed, sampler, eta,
                            use_ema, guided)

    # Config ---------------------------------------------------------------------------
    def _diffusion_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_shape": list(self.image_shape),
            **self.schedule.get_config(),
            "prediction_type": self.prediction_type,
            "condition_dropout": self.condition_dropout,
            "ema_decay": self.ema_decay,
            "clip_sample": self.clip_sample,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }

    def get_config(self):
        return {**self._diffusion_config(),
                "denoiser": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes}

    # The nested Keras objects a config holds, by constructor argument.
    _nested_objects = ("denoiser", "unet", "vae", "text_encoder")

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls._nested_objects:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def prompt_token_ids(prompts, tokenizer=None, sequence_length=None, argument="prompts"):
    """Token id rows [n, length] int32 of prompts: strings (packed with `pack_texts`, which
    needs `tokenizer` and `sequence_length`) or token id rows already packed."""
    if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                    and all(isinstance(p, str) for p in prompts)):
        if tokenizer is None or sequence_length is None:
            raise ValueError(f"`{argument}` as strings need a `tokenizer` (and sequence_length);"
                             " otherwise pass token id rows [n, length].")
        from keras_bigmodels.models.clip.tasks import pack_texts

        return np.asarray(pack_texts(prompts, tokenizer, sequence_length), "int32")
    array = np.asarray(ops.convert_to_numpy(prompts) if not isinstance(
        prompts, (list, tuple, np.ndarray)) else prompts)
    if array.ndim == 1 and array.size and np.issubdtype(array.dtype, np.integer):
        array = array[None]
    if array.ndim != 2 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`{argument}` must be strings (with a tokenizer) or int token id rows "
                         f"[n, length]; received {array.dtype} of shape {array.shape}.")
    if sequence_length is not None and array.shape[1] != sequence_length:
        raise ValueError(f"`{argument}` rows must have length {sequence_length} "
                         f"(sequence_length); received {array.shape[1]}.")
    return array.astype("int32")


class _ContextDiffusion(DiffusionModel):
    """Diffusion over `UNet2DCondition([x, t, context(, added)])`, optionally in a frozen
    VAE's latent space; subclasses say how a condition becomes the denoiser's inputs and
    what the null (classifier-free guidance) condition is."""

    def __init__(self, unet, image_shape, vae=None, num_train_timesteps=1000,
                 beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                 prediction_type="epsilon", condition_dropout=0.1, ema_decay=None,
                 clip_sample=None, learning_rate=1e-4, seed=None, name=None, **kwargs):
        SubclassedTask.__init__(self, name=name, **kwargs)
        self._init_diffusion(image_shape, num_train_timesteps, beta_schedule, beta_start,
                             beta_end, prediction_type, condition_dropout, ema_decay,
                             learning_rate, seed)
        if not isinstance(unet, keras.Model) or not getattr(unet, "cross_attention_dim", None):
            raise ValueError("`unet` must be a UNet2DCondition (called as unet([noisy, "
                             f"timesteps, encoder_hidden_states])); received "
                             f"{type(unet).__name__}.")
        height, width, channels = self.image_shape
        if vae is not None:
            if not hasattr(vae, "encode_latents"):
                raise ValueError(f"`vae` must be an AutoencoderKL; received "
                                 f"{type(vae).__name__}.")
            if vae.in_channels != channels:
                raise ValueError(f"`image_shape` has {channels} channels; the vae takes "
                                 f"in_channels={vae.in_channels}.")
            factor = 2 ** (len(vae.block_out_channels) - 1)
            if height % factor or width % factor:
                raise ValueError(f"`image_shape` {height}x{width} is not divisible by the vae's "
                                 f"downsampling factor {factor}.")
            sample_shape = (height // factor, width // factor, vae.latent_channels)
            vae.trainable = False
        else:
            sample_shape = self.image_shape
        for key in ("in_channels", "out_channels"):
            if getattr(unet, key) != sample_shape[-1]:
                raise ValueError(f"The unet's {key}={getattr(unet, key)} must equal the "
                                 f"{'latent' if vae is not None else 'image'} channels "
                                 f"{sample_shape[-1]}.")
        factor = unet.downsampling_factor
        if sample_shape[0] % factor or sample_shape[1] % factor:
            raise ValueError(f"`image_shape` gives samples {sample_shape[0]}x{sample_shape[1]}, "
                             f"not divisible by the unet's downsampling factor {factor}.")
        self.vae = vae
        self.sample_shape = sample_shape
        self.backbone = unet
        self.num_classes = None
        # Latents are not bounded to [-1, 1]: Stable Diffusion samples without clipping.
        self.clip_sample = (vae is None) if clip_sample is None else bool(clip_sample)

    def label_range(self):
        return None

    def _split(self, x, y):
        if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
            return tuple(x)
        return x, y

    def _sampling_variables(self):
        variables = super()._sampling_variables()
        return variables + (list(self.vae.variables) if self.vae is not None else [])

    def _encode(self, images):
        samples = super()._encode(images)
        if self.vae is None:
            return samples
        return ops.stop_gradient(ops.cast(
            self.vae.encode_latents(samples, seed=self.seed_generator), "float32"))

    def _decode(self, samples):
        if self.vae is not None:
            samples = ops.cast(self.vae.decode_latents(samples), "float32")
        return super()._decode(samples)

    def _condition_inputs(self, y, training=False):
        if y is None:
            raise ValueError(f"{type(self).__name__} trains on (images, conditions); the "
                             "conditions are missing.")
        return self._conditions_of(y, training)

    def _conditions_of(self, y, training=False):
        raise NotImplementedError

    def _config(self):
        return {**self._diffusion_config(),
                "unet": keras.saving.serialize_keras_object(self.backbone),
                "vae": None if self.vae is None else keras.saving.serialize_keras_object(self.vae)}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class LatentTextToImage(_ContextDiffusion):
    """Stable-Diffusion-style text-to-image: frozen VAE + UNet2DCondition + CLIP text encoder.

    `fit((images, token_ids))` (or `fit(images, token_ids)`) encodes the images in [0, 1]
    to scaled latents with the frozen VAE (a posterior sample, as SD trains) and the texts
    to the text encoder's `sequence_output`, and trains the UNet on the diffusion loss; a
    `condition_dropout` share of rows sees the empty prompt's states instead (the
    unconditional model of classifier-free guidance). `generate(prompts)` runs the compiled
    DDIM/DDPM loop in latent space with guidance against the empty prompt and decodes
    images in [0, 1].

    Args:
        vae: an `AutoencoderKL` (frozen).
        unet: a `UNet2DCondition` over the latents, cross_attention_dim = the text width.
        text_encoder: a `CLIPTextEncoder` (frozen unless `train_text_encoder`).
        image_shape: (height, width, channels) of the images.
        tokenizer: packs string prompts (with `pack_texts`); optional, and not saved with
            the model: after `keras.models.load_model`, set `model.tokenizer` again to
            generate from strings.
        sequence_length: token row length (default: the text encoder's max_sequence_length).
        empty_prompt_ids: the packed empty prompt [sequence_length]; default: packed "" with
            the tokenizer (one of the two is required).
        train_text_encoder: train the text encoder with the UNet.
        num_train_timesteps, beta_schedule, beta_start, beta_end: the `NoiseSchedule`
            (SD's scaled_linear 0.00085 to 0.012 by default).
        prediction_type, condition_dropout, ema_decay, learning_rate, seed: as
            `DiffusionModel`; clip_sample: clip predicted latents (False by default).

    Example:
    >>> model = LatentTextToImage(vae, unet, text_encoder, image_shape=(32, 32, 3),
    ...                           tokenizer=tokenizer, sequence_length=16)
    >>> model.fit((images, token_ids), epochs=5, batch_size=16)
    >>> model.generate(["a red circle"], num_steps=25, guidance_scale=5.0, seed=0).shape
    (1, 32, 32, 3)
    """

    def __init__(self, vae, unet, text_encoder, image_shape, tokenizer=None,
                 sequence_length=None, empty_prompt_ids=None, train_text_encoder=False,
                 num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                 beta_end=0.012, prediction_type="epsilon", condition_dropout=0.1,
                 ema_decay=None, clip_sample=False, learning_rate=1e-4, seed=None,
                 name="latent_text_to_image", **kwargs):
        if vae is None:
            raise ValueError("`vae` is required (an AutoencoderKL); for pixel space use "
                             "DiffusionModel.")
        super().__init__(unet, image_shape, vae=vae, num_train_timesteps=num_train_timesteps,
                         beta_schedule=beta_schedule, beta_start=beta_start, beta_end=beta_end,
                         prediction_type=prediction_type, condition_dropout=condition_dropout,
                         ema_decay=ema_decay, clip_sample=clip_sample,
                         learning_rate=learning_rate, seed=seed, name=name, **kwargs)
        width = getattr(text_encoder, "hidden_dim", None)
        if not isinstance(text_encoder, keras.Model) or width is None:
            raise ValueError("`text_encoder` must be a CLIPTextEncoder; received "
                             f"{type(text_encoder).__name__}.")
        if width != unet.cross_attention_dim:
            raise ValueError(f"The text encoder's hidden_dim={width} must equal the unet's "
                             f"cross_attention_dim={unet.cross_attention_dim}.")
        if sequence_length is None:
            sequence_length = text_encoder.max_sequence_length
        check_positive_int("sequence_length", sequence_length)
        if sequence_length > text_encoder.max_sequence_length:
            raise ValueError(f"`sequence_length` must be at most the text encoder's "
                             f"max_sequence_length={text_encoder.max_sequence_length}; received "
                             f"{sequence_length}.")
        if empty_prompt_ids is None:
            if tokenizer is None:
                raise ValueError("Pass `empty_prompt_ids` (the packed empty prompt) or a "
                                 "`tokenizer` to pack it: the null condition of guidance.")
            empty_prompt_ids = prompt_token_ids([""], tokenizer, sequence_length)[0]
        empty = prompt_token_ids(np.asarray(empty_prompt_ids).reshape(1, -1), None,
                                 sequence_length, "empty_prompt_ids")[0]
        self.text_encoder = text_encoder
        self.train_text_encoder = bool(train_text_encoder)
        text_encoder.trainable = self.train_text_encoder
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.empty_prompt_ids = empty
        self._finish_init()

    def _context(self, token_ids, training=False):
        token_ids = ops.cast(token_ids, "int32")
        states = self.text_encoder(token_ids, training=training and self.train_text_encoder)
        states = states["sequence_output"]
        return states if self.train_text_encoder else ops.stop_gradient(states)

    def _conditions_of(self, token_ids, training=False):
        return (ops.cast(self._context(token_ids, training=training), "float32"),)

    def _null_inputs(self, conditions):
        # The empty prompt's states: the unconditional model of classifier-free guidance.
        states = ops.cast(self._context(ops.convert_to_tensor(self.empty_prompt_ids[None])),
                          "float32")
        batch = ops.shape(conditions[0])[0]
        return (ops.broadcast_to(states, (batch,) + tuple(states.shape[1:])),)

    def fit(self, x=None, y=None, *args, **kwargs):
        _, token_ids = self._split(x, y)
        if token_ids is not None and hasattr(token_ids, "shape"):
            prompt_token_ids(np.asarray(token_ids), None, self.sequence_length, "token_ids")
        return super().fit(x, y, *args, **kwargs)

    def generate(self, prompts, num_steps=50, guidance_scale=7.5, seed=None, sampler="ddim",
                 eta=0.0, use_ema=True):
        """Images [n, height, width, channels] in [0, 1] (numpy float32) for prompts.

        Args:
            prompts: strings (with the model's tokenizer) or token id rows [n, length].
            num_steps: sampling steps, 1 to num_train_timesteps.
            guidance_scale: classifier-free guidance against the empty prompt, >= 0 (1: none).
            seed: an int (row i draws from [seed, i]), one int per image, or None.
            sampler: "ddim" or "ddpm"; eta: DDIM's noise; use_ema: sample with EMA weights.

        Example:
        >>> model.generate(token_ids[:2], num_steps=20, guidance_scale=3.0, seed=0)
        """
        check_sampling_arguments(self.schedule, sampler, num_steps, guidance_scale)
        token_ids = prompt_token_ids(prompts, self.tokenizer, self.sequence_length)
        context = ops.convert_to_numpy(self._context(ops.convert_to_tensor(token_ids)))
        return self._sample((context.astype("float32"),), len(token_ids), num_steps,
                            guidance_scale, seed, sampler, eta, use_ema,
                            guided=guidance_scale != 1.0)

    def get_config(self):
        return {**self._config(),
                "text_encoder": keras.saving.serialize_keras_object(self.text_encoder),
                "sequence_length": self.sequence_length,
                "empty_prompt_ids": self.empty_prompt_ids.tolist(),
                "train_text_encoder": self.train_text_encoder}


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class ImageEmbeddingDecoder(_ContextDiffusion):
    """unCLIP's decoder (Ramesh et al. 2022, Sec. 2.1) at small scale: images from CLIP
    image embeddings.

    The embedding conditions a `UNet2DCondition` through both of the paper's paths: it is
    projected and added to the timestep embedding (the unet's `class_labels` input, built
    with `class_embedding_input_dim` = the embedding width), and projected into
    `num_context_tokens` extra tokens (4 in the paper) of cross-attention context, placed
    before the text tokens when text states are given (as diffusers' UnCLIPTextProjModel).
    Pixel space, or a frozen VAE's latents. A `condition_dropout` share of training rows
    sees a zero embedding (and zero text states), the null condition that
    `generate(guidance_scale=s)` contrasts with (the paper zeroes the CLIP embedding 10% of
    the time).

    Conditions: image embeddings [batch, condition_dim], or a pair (image embeddings, text
    states [batch, text_length, cross_attention_dim]), e.g. a text encoder's sequence
    output.

    Args:
        unet: a `UNet2DCondition` with `class_embedding_input_dim` set (the embedding width).
        image_shape: (height, width, channels).
        vae: an optional `AutoencoderKL` (latent decoder).
        num_context_tokens: extra context tokens projected from the embedding.
        Others: as `DiffusionModel`.

    Example:
    >>> unet = UNet2DCondition(in_channels=3, out_channels=3, block_out_channels=(16, 16),
    ...                        cross_attention_levels=(True, False), num_heads=2,
    ...                        cross_attention_dim=16, norm_num_groups=4,
    ...                        class_embedding_input_dim=8)
    >>> decoder = ImageEmbeddingDecoder(unet, image_shape=(8, 8, 3))
    >>> decoder.fit(images, image_embeddings, epochs=5)
    >>> decoder.generate(image_embeddings[:2], num_steps=20, seed=0).shape
    (2, 8, 8, 3)
    """

    def __init__(self, unet, image_shape, vae=None, num_context_tokens=4,
                 name="image_embedding_decoder", **kwargs):
        super().__init__(unet, image_shape, vae=vae, name=name, **kwargs)
        dim = getattr(unet, "class_embedding_input_dim", None)
        if dim is None:
            raise ValueError("`unet` must be a UNet2DCondition built with "
                             "`class_embedding_input_dim` (the image embedding width): unCLIP "
                             "adds the projected embedding to the timestep embedding.")
        check_positive_int("num_context_tokens", num_context_tokens)
        self.condition_dim = int(dim)
        self.num_context_tokens = int(num_context_tokens)
        self.context_projection = keras.layers.Dense(
            self.num_context_tokens * unet.cross_attention_dim, name="context_projection",
            dtype=unet.dtype_policy)
        self.context_projection.build((None, self.condition_dim))
        self._finish_init()

    def _denoising_layers(self):
        return [self.backbone, self.context_projection]

    def _conditions_of(self, y, training=False):
        if isinstance(y, (tuple, list)):
            embeddings, text = y
            return (ops.cast(embeddings, "float32"), ops.cast(text, "float32"))
        return (ops.cast(y, "float32"),)

    def _null_inputs(self, conditions):
        return tuple(ops.zeros_like(c) for c in conditions)

    def _network_inputs(self, conditions, training=False):
        embeddings = conditions[0]
        tokens = ops.reshape(self.context_projection(embeddings),
                             (-1, self.num_context_tokens, self.backbone.cross_attention_dim))
        if len(conditions) > 1:
            tokens = ops.concatenate([tokens, ops.cast(conditions[1], tokens.dtype)], axis=1)
        return [tokens, embeddings]

    def _check_conditions(self, name, value):
        text = None
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"`{name}` must be image embeddings [batch, "
                                 f"{self.condition_dim}] or a pair (image embeddings, text "
                                 f"states); received {len(value)} parts.")
            value, text = value
        array = np.asarray(ops.convert_to_numpy(value))
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != self.condition_dim \
                or not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"`{name}` must be float embeddings [batch, {self.condition_dim}] "
                             f"(the unet's class_embedding_input_dim); received {array.dtype} "
                             f"of shape {array.shape}.")
        if text is None:
            return (array.astype("float32"),)
        text = np.asarray(ops.convert_to_numpy(text))
        width = self.backbone.cross_attention_dim
        if text.ndim != 3 or text.shape[0] != array.shape[0] or text.shape[2] != width:
            raise ValueError(f"The text states of `{name}` must be [batch={array.shape[0]}, "
                             f"text_length, cross_attention_dim={width}]; received shape "
                             f"{text.shape}.")
        return (array.astype("float32"), text.astype("float32"))

    def fit(self, x=None, y=None, *args, **kwargs):
        _, conditions = self._split(x, y)
        if conditions is not None and (hasattr(conditions, "shape")
                                       or isinstance(conditions, (tuple, list))):
            self._check_conditions("y", conditions)
        return super().fit(x, y, *args, **kwargs)

    def generate(self, image_embeddings, num_steps=50, guidance_scale=1.0, seed=None,
                 sampler="ddim", eta=0.0, use_ema=True, text_states=None):
        """Images [n, height, width, channels] in [0, 1] for image embeddings [n, dim].

        Args:
            image_embeddings: float [n, condition_dim].
            num_steps, guidance_scale, seed, sampler, eta, use_ema: as
                `DiffusionModel.generate`; guidance contrasts with the zero embedding.
            text_states: optional [n, text_length, cross_attention_dim], for a decoder
                trained with text states.

        Example:
        >>> decoder.generate(np.zeros((2, 8), "float32"), num_steps=10, seed=0).shape
        (2, 8, 8, 3)
        """
        check_sampling_arguments(self.schedule, sampler, num_steps, guidance_scale)
        value = image_embeddings if text_states is None else (image_embeddings, text_states)
        conditions = self._check_conditions("image_embeddings", value)
        return self._sample(conditions, conditions[0].shape[0], num_steps, guidance_scale,
                            seed, sampler, eta, use_ema, guided=guidance_scale != 1.0)

    def get_config(self):
        return {**self._config(), "num_context_tokens": self.num_context_tokens}
