"""Seq2SeqLM: the task base of encoder-decoder language models (T5, BART); owns `generate()`."""

import importlib
import os

import keras
import numpy as np
from keras import ops

from keras_bigmodels.backend import compile_function
from keras_bigmodels.backend.decoding import invoke, own
from keras_bigmodels.generation import beam_search, decode, repeat_batch
from keras_bigmodels.losses import SparseCrossEntropy
from keras_bigmodels.models.base import EagerTrainingStep
from keras_bigmodels.models.generative import GenerativeTask, bucket_length
from keras_bigmodels.utils import check_positive_int, check_token_ids


INPUT_NAMES = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
               "decoder_padding_mask")


def training_graph(backbone):
    """(inputs, float32 logits) of teacher-forced training on an encoder-decoder backbone
    whose outputs include "decoder_sequence_output" and whose `logits(hidden)` is the
    output layer."""
    inputs = {name: backbone.input[name] for name in INPUT_NAMES}
    hidden = backbone(inputs)["decoder_sequence_output"]
    logits = backbone.logits(hidden)
    return inputs, keras.layers.Activation("linear", dtype="float32", name="logits")(logits)


class Seq2SeqBackboneMethods:
    """The decode protocol that encoder-decoder backbones share (T5, BART): one home for
    their layer counts, the cache layout and the decoder's cached layer loop.

    A backbone using it sets `encoder_layers`, `decoder_layers` (a list, empty for an
    encoder-only model), `num_encoder_layers`, `num_heads`, `hidden_dim`, `key_dim`,
    `vocabulary_size` and, where positions are learned, `decoder_max_sequence_length`;
    it writes its own `encode` and `call_with_cache` (embeddings and position biases
    differ) on top of `cached_decoder_layers`.

    Example:
    >>> class MyBackbone(Seq2SeqBackboneMethods, Backbone): ...
    >>> cache = backbone.initial_cache(encoder_outputs, encoder_mask, max_length=9)
    >>> len(cache["self"]) == backbone.num_layers
    True
    """

    decoder_max_sequence_length = None

    @property
    def num_layers(self):
        """Decoder layers (the count of cached layers); encoder layers if encoder-only."""
        return len(self.decoder_layers) if self.decoder_layers else self.num_encoder_layers

    @property
    def head_dim(self):
        return self.key_dim or self.hidden_dim // self.num_heads

    def check_decoder(self):
        if not self.decoder_layers:
            raise ValueError(f"This {type(self).__name__} was built with `encoder_only=True`; "
                             "it has no decoder to run.")

    def initial_cache(self, encoder_outputs, encoder_padding_mask, max_length):
        """{"self": zero self-attention caches, "cross": cross-attention keys/values}, one
        per decoder layer.

        "cross" is computed here once per `generate()` and never changes while decoding
        (every beam of a row holds the same), so `Seq2SeqLM` keeps it out of the state
        that beam search reorders.
        """
        self.check_decoder()
        limit = self.decoder_max_sequence_length
        if limit is not None and max_length > limit:
            raise ValueError(
                f"Decoding to length {max_length} goes beyond the decoder's {limit} learned "
                "positions; lower `max_length`.")
        batch = ops.shape(encoder_outputs)[0]
        shape = (batch, 2, self.num_heads, max_length, self.head_dim)
        # The layers' compute dtype (bfloat16 under mixed precision), not the model's.
        dtype = self.decoder_layers[0].compute_dtype
        return {
            "self": [ops.zeros(shape, dtype) for _ in self.decoder_layers],
            "cross": [block.cross_attention_cache(encoder_outputs)
                      for block in self.decoder_layers],
        }

    def cached_decoder_layers(self, hidden, cache, cache_update_index, encoder_padding_mask,
                              self_attention_bias=None):
        """The decoder blocks over `hidden` written at `cache_update_index`: (hidden, cache)."""
        new_self = []
        for block, self_cache, cross_cache in zip(self.decoder_layers, cache["self"],
                                                  cache["cross"]):
            hidden, self_cache = invoke(
                block, hidden, encoder_padding_mask=encoder_padding_mask,
                self_attention_bias=self_attention_bias, cache=self_cache,
                cache_update_index=cache_update_index, cross_attention_cache=cross_cache)
            new_self.append(self_cache)
        return hidden, {"self": new_self, "cross": cache["cross"]}

    def check_token_ids(self, token_ids, name):
        check_token_ids(token_ids, self.vocabulary_size, name=name)


class Seq2SeqLM(EagerTrainingStep, GenerativeTask):
    """Base of encoder-decoder tasks: `generate()` encodes once, then decodes with a
    self-attention cache and cross-attention keys/values computed once.

    The decode protocol a subclass provides:

    - `self.backbone` with `vocabulary_size`, `max_sequence_length` (encoder positions;
      None if unlimited), `decoder_max_sequence_length` (optional, None if unlimited),
      `encode(encoder_token_ids, encoder_padding_mask)` -> encoder outputs,
      `initial_cache(encoder_outputs, encoder_padding_mask, max_length)` -> a dict
      {"self": self-attention caches of zeros, "cross": the cross-attention keys/values of
      `TransformerDecoderBlock.cross_attention_cache`}, every tensor's first axis the batch,
      and `call_with_cache(decoder_token_ids, cache, cache_update_index,
      encoder_padding_mask)` -> `(hidden, cache)` (`Seq2SeqBackboneMethods` gives the
      shared parts);
    - `logits_from_hidden(hidden)`; `decoder_start_token_id`, `eos_token_id`,
      `pad_token_id` attributes; `self.tokenizer` (or None) for strings.

    Example:
    >>> t5 = T5Seq2SeqLM.from_preset("t5-small")
    >>> t5.generate([[13, 8, 21, 1]], max_new_tokens=8, sampler="beam", num_beams=4)
    """

    decoder_start_token_id = 0
    eos_token_id = None
    pad_token_id = 0

    default_learning_rate = 1e-4

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Compile; "auto" gives AdamW(`default_learning_rate`, weight decay 0.01, clipnorm
        1.0), cross-entropy from logits (padding weighted out by the sample weights) and no
        metrics.

        Example:
        >>> lm.compile(optimizer=keras.optimizers.AdamW(3e-5))
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(self.default_learning_rate, weight_decay=0.01,
                                               clipnorm=1.0)
        if loss == "auto":
            loss = SparseCrossEntropy()
        if metrics == "auto":
            metrics = None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def logits_from_hidden(self, hidden):
        """float32 logits of decoder states through the backbone's output layer."""
        return ops.cast(self.backbone.logits(hidden), "float32")

    # Hugging Face ---------------------------------------------------------------------
    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """The task from a local HF checkpoint directory (config.json + model.safetensors
        [+ tokenizer files]); the backbone's family mapping checks `model_type`.

        Args:
            path: a local directory written by `save_pretrained`.
            backbone_overrides: backbone kwargs to change (e.g. `{"dropout": 0.0}`).
            dtype: the backbone's dtype policy (e.g. "bfloat16").
            **task_kwargs: task kwargs; the tokenizer defaults to the directory's
                tokenizer (`checkpoints.read_tokenizer`: tokenizer.json, spiece.model or
                vocab.json + merges.txt, if any) and the special ids to config.json's.

        Example:
        >>> t5 = T5Seq2SeqLM.from_huggingface("flan-t5-small/")  # a save_pretrained dir
        """
        from keras_bigmodels.checkpoints import read_config, read_tokenizer

        backbone = cls.backbone_cls.from_huggingface(path, dtype=dtype,
                                                     **(backbone_overrides or {}))
        mapping = importlib.import_module(cls.backbone_cls.huggingface_mapping)
        for name, value in mapping.generation_ids(read_config(os.fspath(path))).items():
            task_kwargs.setdefault(name, value)
        if "tokenizer" not in task_kwargs:
            task_kwargs["tokenizer"] = read_tokenizer(path)
        return cls(backbone, **task_kwargs)

    def set_special_tokens(self, decoder_start_token_id, eos_token_id, pad_token_id):
        """Check the special ids against the backbone's vocabulary and keep them."""
        vocabulary = self.backbone.vocabulary_size
        for name, value in (("decoder_start_token_id", decoder_start_token_id),
                            ("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
            if value is not None and not 0 <= int(value) < vocabulary:
                raise ValueError(f"`{name}` must be an id in [0, {vocabulary - 1}]; "
                                 f"received {value}.")
        self.decoder_start_token_id = int(decoder_start_token_id)
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)
        self.pad_token_id = int(pad_token_id)

    def input_ranges(self):
        vocabulary = self.backbone.vocabulary_size
        return {"encoder_token_ids": (0, vocabulary), "decoder_token_ids": (0, vocabulary)}

    def label_range(self):
        return (0, self.backbone.vocabulary_size)

    def get_config(self):
        config = super().get_config()
        config.update(decoder_start_token_id=self.decoder_start_token_id,
                      eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id)
        return config

    def _generate_function(self, sampler, num_beams, stop_token_ids, pad_token_id,
                           source_length, total_length, length_penalty, max_new_tokens):
        key = ("seq2seq", sampler.key(), num_beams, stop_token_ids, pad_token_id,
               source_length, total_length, length_penalty, max_new_tokens)

        def build():
            def generate(encoder_token_ids, encoder_padding_mask, token_ids, prompt_mask,
                         uniform):
                self._count_trace()
                encoder_outputs = self.backbone.encode(encoder_token_ids, encoder_padding_mask)
                cache = self.backbone.initial_cache(encoder_outputs, encoder_padding_mask,
                                                    total_length)
                # The cross-attention keys/values and the encoder mask are the same for every
                # beam of a row and never change while decoding: they stay out of the loop
                # state (repeated per beam once), so beam search gathers only the
                # self-attention caches at each step, not [beams, source] keys/values too.
                constants = (cache["cross"], encoder_padding_mask)
                if num_beams > 1:
                    constants = repeat_batch(constants, num_beams)
                cross, mask = constants

                def next_logits(ids, self_cache, index):
                    hidden, cache = self.backbone.call_with_cache(
                        ids, {"self": self_cache, "cross": cross}, index, mask)
                    return ops.cast(self.logits_from_hidden(hidden), "float32"), cache["self"]

                state = own(cache["self"])
                if num_beams > 1:
                    ids, _ = beam_search(next_logits, state, token_ids, prompt_mask, 1,
                                         num_beams, stop_token_ids, length_penalty,
                                         max_new_tokens)
                    return ids
                # Greedy reads no random numbers: no per-step gather of them.
                return decode(next_logits, state, token_ids, prompt_mask, 1, sampler,
                              stop_token_ids, uniform if sampler.is_random else None,
                              pad_token_id, max_new_tokens)

            return compile_function(generate, self.variables)

        return self._compiled_function(key, build)

    def generate(self, inputs, max_new_tokens=32, sampler="greedy", temperature=1.0,
                 top_k=50, top_p=0.9, num_beams=4, length_penalty=1.0,
                 stop_token_ids="auto", seed=None):
        """Write an output sequence for each input sequence.

        The decoder starts from `decoder_start_token_id`; each row stops after
        `max_new_tokens` or at a stop token, exactly as it would decoded alone.

        Args:
            inputs: encoder inputs: a string or list of strings (needs a tokenizer; returns
                strings), a list of id lists or a flat id list (returns id lists of the
                generated tokens, start token excluded, cut after a stop token), or an int
                array [batch, length] (returns an array [batch, max_new_tokens], padded
                after a stop token).
            max_new_tokens: tokens to generate per row.
            sampler, temperature, top_k, top_p, num_beams, length_penalty, stop_token_ids,
                seed: as in `CausalLM.generate` ("auto" stops at `eos_token_id`).

        Example:
        >>> t5.generate(["translate English to German: That is good."], max_new_tokens=16)
        """
        check_positive_int("max_new_tokens", max_new_tokens)
        # An encoder input is a whole sequence: the tokenizer's template adds its special
        # tokens (T5's closing </s>, BART's <s> ... </s>), as transformers' tokenizers do.
        rows, kind = self._rows(inputs, name="inputs", add_special_tokens=True)
        self._check_rows(rows, name="inputs")
        start = self.decoder_start_token_id
        vocabulary = self.backbone.vocabulary_size
        if not isinstance(start, (int, np.integer)) or not 0 <= start < vocabulary:
            raise ValueError(f"`decoder_start_token_id` must be an id in [0, {vocabulary - 1}]; "
                             f"received {start!r}.")
        stop_token_ids = self._stop_tokens(stop_token_ids)
        pad_token_id = int(self.pad_token_id if self.pad_token_id is not None else 0)
        step_sampler, beams, penalty = self._sampler(sampler, temperature, top_k, top_p,
                                                     num_beams, length_penalty)
        lengths = [len(r) for r in rows]
        limit = self.backbone.max_sequence_length
        if limit is not None and max(lengths) > limit:
            raise ValueError(f"An input has {max(lengths)} tokens, more than the encoder's "
                             f"max_sequence_length={limit}; truncate it.")
        decoder_limit = getattr(self.backbone, "decoder_max_sequence_length", None)
        if decoder_limit is not None and 1 + max_new_tokens > decoder_limit:
            raise ValueError(f"max_new_tokens={max_new_tokens} exceeds the decoder's "
                             f"{decoder_limit - 1} positions after the start token.")
        source_length = bucket_length(max(lengths), self.generate_lengths_multiple, limit)
        total_length = 1 + max_new_tokens  # in the compiled function's key already

        encoder_ids = np.full((len(rows), source_length), pad_token_id, dtype="int32")
        encoder_mask = np.zeros((len(rows), source_length), dtype=bool)
        for i, row in enumerate(rows):
            encoder_ids[i, :len(row)] = row
            encoder_mask[i, :len(row)] = True
        fill = stop_token_ids[0] if stop_token_ids else pad_token_id
        buffer = np.full((len(rows), total_length), fill, dtype="int32")
        buffer[:, 0] = start
        prompt_mask = np.zeros((len(rows), total_length), dtype=bool)
        prompt_mask[:, 0] = True
        uniform = self._uniform(seed, len(rows), max_new_tokens)

        function = self._generate_function(step_sampler, beams, stop_token_ids, fill,
                                           source_length, total_length, penalty,
                                           max_new_tokens)
        output = function(ops.convert_to_tensor(encoder_ids),
                          ops.convert_to_tensor(encoder_mask),
                          ops.convert_to_tensor(buffer), ops.convert_to_tensor(prompt_mask),
                          ops.convert_to_tensor(uniform))
        output = ops.convert_to_numpy(output)
        return self._format_outputs(output, [1] * len(rows), max_new_tokens, stop_token_ids, kind,
                             keep_prompt=False)
