"""GPTCausalLM: next-token prediction with a tied output layer, generation, HF import."""

import keras
import numpy as np
from keras import ops

from keras_bigmodels.generation import Sampler, beam_search, compile_function, decode
from keras_bigmodels.models.base import Task
from keras_bigmodels.models.gpt.backbone import GPTBackbone
from keras_bigmodels.backend.decoding import invoke, own
from keras_bigmodels.losses import SparseCrossEntropy
from keras_bigmodels.models.fused_output import FusedOutputLoss
from keras_bigmodels.utils import check_finite_number, check_positive_int


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class GPTCausalLM(FusedOutputLoss, Task):
    """A GPT language model: token ids [batch, length] -> logits [batch, length, vocabulary].

    Trained with L = sum_i log P(x_i | x_<i) on packed windows (see
    `keras_bigmodels.objectives.causal_lm.pack_documents`); compiled by default with
    AdamW, cross-entropy from logits and perplexity.

    Args:
        backbone: a `GPTBackbone`.
        tokenizer: optional `keras_bigmodels.tokenizers.Tokenizer`; enables strings in
            `generate`.

    Example:
    >>> lm = GPTCausalLM(GPTBackbone(100, 2, 2, 32, 64, max_sequence_length=32))
    >>> lm.generate([[1, 2, 3], [4, 5]], max_new_tokens=4)
    """

    backbone_cls = GPTBackbone

    def __init__(self, backbone, tokenizer=None, **kwargs):
        token_ids = backbone.input
        hidden = backbone(token_ids)
        logits = backbone.token_embedding(hidden, reverse=True)
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self._generate_functions = {}
        self.compile()

    def compile(self, optimizer="auto", loss="auto", metrics="auto", fused_loss="auto",
                **kwargs):
        """Compile; "auto" gives AdamW(3e-4, weight decay 0.1, clipnorm 1), cross-entropy
        from logits, and perplexity.

        `fused_loss` ("auto", True or False): train the output layer and the loss as one
        chunked `linear_cross_entropy` (no [batch, length, vocabulary] logits in the
        step: less memory, and faster steps on JAX); "auto" on JAX and PyTorch when the loss is
        `SparseCrossEntropy` and no compiled metric needs the logits.

        The "auto" perplexity is exp(loss), read off the loss Keras already tracks rather
        than a second cross-entropy pass over the logits each step (about 10% of a small
        model's step). It equals `Perplexity()` for the loss, so for packed windows without
        sample weights; with weights (padding), pass `metrics=[Perplexity()]`.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(3e-4, weight_decay=0.1, beta_2=0.95,
                                               clipnorm=1.0)
        if loss == "auto":
            loss = SparseCrossEntropy()
        # None too: a saved model recompiles from its config with the None stored here.
        self._perplexity_from_loss = metrics is None or metrics == "auto"
        if self._perplexity_from_loss:
            metrics = None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.configure_fused_loss(fused_loss, loss, metrics, kwargs.get("weighted_metrics"))

    def fused_loss_hidden(self, token_ids, training):
        return self.backbone(token_ids, training=training)

    def fused_loss_table(self):
        return self.backbone.token_embedding.embeddings

    def get_metrics_result(self):
        logs = super().get_metrics_result()
        if getattr(self, "_perplexity_from_loss", False) and "loss" in logs:
            logs.setdefault("perplexity", ops.exp(ops.cast(logs["loss"], "float32")))
        return logs

    # Generation -----------------------------------------------------------------------
    def next_logits(self, token_ids, cache, cache_update_index):
        """One cached step: logits of `token_ids` at `cache_update_index`, and the cache."""
        hidden, cache = self.backbone.call_with_cache(token_ids, cache, cache_update_index)
        logits = invoke(self.backbone.token_embedding, hidden, reverse=True)
        return ops.cast(logits, "float32"), cache

    def _generate_function(self, sampler, num_beams, stop_token_ids, pad_token_id,
                           prompt_length, length_penalty=1.0):
        key = (sampler.key(), num_beams, stop_token_ids, pad_token_id, prompt_length,
               length_penalty)
        if key not in self._generate_functions:
            def generate(token_ids, prompt_mask, start_index, uniform):
                batch = ops.shape(token_ids)[0]
                cache = own(self.backbone.initial_cache(batch, token_ids.shape[1]))
                # Prefill the prompt block once; positions from start_index - 1 on are
                # recomputed by the loop, which also writes rows' own continuations.
                _, cache = self.next_logits(token_ids[:, :prompt_length], cache, 0)
                if num_beams > 1:
                    ids, _ = beam_search(self.next_logits, cache, token_ids, prompt_mask,
                                         start_index, num_beams, stop_token_ids,
                                         pad_token_id, length_penalty)
                    return ids
                return decode(self.next_logits, cache, token_ids, prompt_mask, start_index,
                              sampler, stop_token_ids, uniform, pad_token_id)

            self._generate_functions[key] = compile_function(generate, self.variables)
        return self._generate_functions[key]

    def generate(self, prompts, max_new_tokens=32, sampler="greedy", temperature=1.0,
                 top_k=50, top_p=0.9, num_beams=4, length_penalty=1.0,
                 stop_token_ids="auto", seed=None):
        """Continue prompts with a KV cache and a compiled decode loop.

        Args:
            prompts: a string or list of strings (needs a tokenizer; returns strings), a
                list of id lists (returns lists: prompt + continuation, cut after a stop
                token), or an int array [batch, length] (returns an array
                [batch, length + max_new_tokens], padded after a stop token).
            max_new_tokens: tokens to add to each prompt.
            sampler: "greedy", "random", "top_k", "top_p" or "beam".
            temperature, top_k, top_p: sampling parameters.
            num_beams: beams of "beam".
            length_penalty: "beam" ranks a finished beam by
                sum_logprob / generated_length ** length_penalty (Hugging Face's
                convention; generated_length counts the continuation, stop token
                included). > 0 favours longer continuations, < 0 shorter ones, 0 ranks
                by the raw summed log-probability. Only matters with stop tokens: beams
                that all run to max_new_tokens share one length.
            stop_token_ids: ids that end a row; "auto" is the tokenizer's end-of-text id
                (none without a tokenizer); None or () never stops early.
            seed: int seed of the random samplers.

        Example:
        >>> lm.generate(["The attention"], max_new_tokens=16, sampler="top_p")
        """
        check_positive_int("max_new_tokens", max_new_tokens)
        strings = isinstance(prompts, str) or (
            isinstance(prompts, (list, tuple)) and len(prompts) > 0
            and all(isinstance(p, str) for p in prompts))
        single = isinstance(prompts, str)
        if strings:
            if self.tokenizer is None:
                raise ValueError("String prompts need a tokenizer: build the model with "
                                 "`GPTCausalLM(backbone, tokenizer=...)` or pass token ids.")
            rows = self.tokenizer.encode([prompts] if single else list(prompts))
        elif isinstance(prompts, (list, tuple)):
            rows = [list(np.asarray(p).reshape(-1).astype(int)) for p in prompts]
        else:
            array = np.asarray(keras.ops.convert_to_numpy(prompts))
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
                raise ValueError("`prompts` must be strings, a list of id lists or an int "
                                 f"array [batch, length]; received shape {array.shape}.")
            rows = [list(r) for r in array]
        if not rows or any(len(r) == 0 for r in rows):
            raise ValueError("Every prompt needs at least one token.")

        if stop_token_ids == "auto":
            eos = getattr(self.tokenizer, "eos_token_id", None)
            stop_token_ids = () if eos is None else (eos,)
        stop_token_ids = tuple(int(t) for t in (stop_token_ids or ()))
        pad_token_id = stop_token_ids[0] if stop_token_ids else 0
        check_finite_number("length_penalty", length_penalty)
        length_penalty = float(length_penalty)
        if sampler == "beam":
            check_positive_int("num_beams", num_beams)
            step_sampler, beams = Sampler("greedy"), num_beams
        else:
            step_sampler, beams = Sampler(sampler, temperature, top_k, top_p), 1

        lengths = [len(r) for r in rows]
        prompt_length = max(lengths)
        total_length = prompt_length + max_new_tokens
        if total_length > self.backbone.max_sequence_length:
            raise ValueError(
                f"The longest prompt ({prompt_length} tokens) plus max_new_tokens "
                f"({max_new_tokens}) exceeds max_sequence_length="
                f"{self.backbone.max_sequence_length}."
            )
        vocabulary = self.backbone.vocabulary_size
        buffer = np.full((len(rows), total_length), pad_token_id, dtype="int32")
        mask = np.zeros((len(rows), total_length), dtype=bool)
        for i, row in enumerate(rows):
            if min(row) < 0 or max(row) >= vocabulary:
                raise ValueError(f"Prompt {i} holds ids outside [0, {vocabulary - 1}] "
                                 f"(vocabulary_size={vocabulary}).")
            buffer[i, :len(row)] = row
            mask[i, :len(row)] = True
        rng = np.random.default_rng(seed)
        uniform = rng.random((total_length, len(rows)), dtype=np.float32)

        function = self._generate_function(step_sampler, beams, stop_token_ids, pad_token_id,
                                           prompt_length, length_penalty if beams > 1 else 1.0)
        output = function(ops.convert_to_tensor(buffer), ops.convert_to_tensor(mask),
                          ops.convert_to_tensor(min(lengths), "int32"),
                          ops.convert_to_tensor(uniform))
        output = np.asarray(ops.convert_to_numpy(output))

        if not strings and not isinstance(prompts, (list, tuple)):
            return output
        results = []
        for row, length in zip(output.tolist(), lengths):
            continuation = row[length:length + max_new_tokens]
            for j, token in enumerate(continuation):
                if token in stop_token_ids:
                    continuation = continuation[:j]
                    break
            results.append(row[:length] + continuation)
        if strings:
            texts = self.tokenizer.decode(results)
            return texts[0] if single else texts
        return results

    # Hugging Face ---------------------------------------------------------------------
    @classmethod
    def from_huggingface(cls, path, **kwargs):
        """A GPT-2 or GPT-1 checkpoint dir (config.json + model.safetensors [+ tokenizer.json]).

        `model_type` in config.json picks the mapping: "gpt2" (`GPT2LMHeadModel`) or
        "openai-gpt" (`OpenAIGPTLMHeadModel`, post-norm); anything else is a ValueError.

        Args:
            path: a local directory written by `save_pretrained`.
            **kwargs: `dtype` and GPTBackbone overrides (e.g. `dropout`).

        Example:
        >>> lm = GPTCausalLM.from_huggingface("gpt2/")  # a local save_pretrained dir
        """
        from keras_bigmodels.models.gpt.huggingface import load_gpt

        return load_gpt(cls, path, **kwargs)

    # Config ---------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config["tokenizer"] = None if self.tokenizer is None else self.tokenizer.get_config()
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("tokenizer"), dict):
            from keras_bigmodels.tokenizers import Tokenizer

            config["tokenizer"] = Tokenizer.from_config(config["tokenizer"])
        return super().from_config(config)
