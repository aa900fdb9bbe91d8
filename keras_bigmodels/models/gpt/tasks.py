"""GPTCausalLM: next-token prediction with a tied output layer, generation, HF import."""

import keras
from keras import ops

from keras_bigmodels.models.causal_lm import CausalLM
from keras_bigmodels.models.gpt.backbone import GPTBackbone
from keras_bigmodels.backend.decoding import invoke
from keras_bigmodels.losses import SparseCrossEntropy
from keras_bigmodels.models.fused_output import FusedOutputLoss


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class GPTCausalLM(FusedOutputLoss, CausalLM):
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
        self.compile_extras = {"fused_loss": fused_loss}
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

    def logits_from_hidden(self, hidden):
        return invoke(self.backbone.token_embedding, hidden, reverse=True)

    # Hugging Face ---------------------------------------------------------------------
    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """A GPT-2 or GPT-1 checkpoint dir (config.json + model.safetensors [+ tokenizer.json]).

        `model_type` in config.json picks the mapping: "gpt2" (`GPT2LMHeadModel`) or
        "openai-gpt" (`OpenAIGPTLMHeadModel`, post-norm); anything else is a ValueError.

        Args:
            path: a local directory written by `save_pretrained`.
            backbone_overrides: GPTBackbone kwargs to change (e.g. `{"dropout": 0.0}`).
            dtype: the backbone's dtype policy (e.g. "bfloat16").
            **task_kwargs: task kwargs (the tokenizer defaults to the directory's
                tokenizer.json, if any).

        Example:
        >>> lm = GPTCausalLM.from_huggingface("gpt2/")  # a local save_pretrained dir
        """
        from keras_bigmodels.models.gpt.huggingface import load_gpt

        return load_gpt(cls, path, backbone_overrides, dtype, **task_kwargs)
