"""T5Seq2SeqLM: T5 / mT5 / Flan-T5 text-to-text with teacher forcing, generation, HF import."""

import keras

from keras_bigmodels.losses import SparseCrossEntropy
from keras_bigmodels.models.fused_output import FusedOutputLoss
from keras_bigmodels.models.seq2seq_lm import Seq2SeqLM
from keras_bigmodels.models.t5.backbone import T5Backbone

INPUT_NAMES = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
               "decoder_padding_mask")


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class T5Seq2SeqLM(FusedOutputLoss, Seq2SeqLM):
    """T5 for text-to-text: encoder ids + decoder ids -> logits [batch, target, vocabulary].

    The output layer is the token table applied to the decoder output scaled by
    hidden_dim**-0.5 (T5 v1.0), or the backbone's untied `output_token_embedding` (v1.1,
    Flan-T5, mT5). Fit with teacher forcing on (x, y, sample_weight) from
    `keras_bigmodels.objectives.text_to_text` (fine-tuning) or the span-corruption
    objective (pre-training): the decoder reads the targets shifted right behind the pad
    id 0, padding weighted out of the loss. `generate()` comes from `Seq2SeqLM`: the
    encoder runs once per call, cross-attention keys/values are computed once.

    Args:
        backbone: a `T5Backbone` (not `encoder_only`).
        tokenizer: optional `keras_bigmodels.tokenizers.Tokenizer`; enables strings in
            `generate`.
        decoder_start_token_id, eos_token_id, pad_token_id: T5's 0, 1 and 0.

    Example:
    >>> lm = T5Seq2SeqLM(T5Backbone(100, 2, 2, 32, 64))
    >>> lm.generate([[5, 6, 7, 1]], max_new_tokens=4)
    """

    backbone_cls = T5Backbone

    def __init__(self, backbone, tokenizer=None, decoder_start_token_id=0, eos_token_id=1,
                 pad_token_id=0, **kwargs):
        if getattr(backbone, "encoder_only", False):
            raise ValueError("`backbone` was built with `encoder_only=True`; T5Seq2SeqLM "
                             "needs the decoder too.")
        inputs = {name: backbone.input[name] for name in INPUT_NAMES}
        hidden = backbone(inputs)["decoder_sequence_output"]
        logits = backbone.logits(hidden)
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.set_special_tokens(decoder_start_token_id, eos_token_id, pad_token_id)
        self.compile()

    def compile(self, optimizer="auto", loss="auto", metrics="auto", fused_loss="auto",
                **kwargs):
        """Compile; "auto" gives AdamW(3e-4, weight decay 0.01, clipnorm 1.0) and
        cross-entropy from logits (padding is weighted out by the sample weights).

        `fused_loss` ("auto", True or False): train the output layer and the loss as one
        chunked `linear_cross_entropy` (no [batch, target, vocabulary] logits in the step;
        mT5's 250,112-token vocabulary makes those large); see `FusedOutputLoss`.

        Example:
        >>> lm.compile(optimizer=keras.optimizers.Adafactor(1e-3))  # T5's fine-tuning
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(3e-4, weight_decay=0.01, clipnorm=1.0)
        if loss == "auto":
            loss = SparseCrossEntropy()
        if metrics == "auto":
            metrics = None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.compile_extras = {"fused_loss": fused_loss}
        self.configure_fused_loss(fused_loss, loss, metrics, kwargs.get("weighted_metrics"))

    def logits_from_hidden(self, hidden):
        return keras.ops.cast(self.backbone.logits(hidden), "float32")

    # The fused output loss reads the hidden states the output table multiplies.
    def fused_loss_hidden(self, inputs, training):
        hidden = self.backbone(inputs, training=training)["decoder_sequence_output"]
        if self.backbone.scale_decoder_output:
            hidden = hidden * keras.ops.cast(self.backbone.hidden_dim ** -0.5, hidden.dtype)
        return hidden

    def fused_loss_table(self):
        return self.backbone.output_token_embedding.embeddings

    # Hugging Face ---------------------------------------------------------------------
    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """A `T5ForConditionalGeneration` checkpoint dir (config.json + model.safetensors
        [+ tokenizer.json]): T5 v1.0, v1.1, Flan-T5 (model_type "t5") or mT5 ("mt5").

        Args:
            path: a local directory written by `save_pretrained`.
            backbone_overrides: T5Backbone kwargs to change (e.g. `{"dropout": 0.0}`).
            dtype: the backbone's dtype policy (e.g. "bfloat16").
            **task_kwargs: task kwargs; the tokenizer defaults to the directory's
                tokenizer.json (if any) and the special ids to config.json's.

        Example:
        >>> t5 = T5Seq2SeqLM.from_huggingface("flan-t5-small/")  # a save_pretrained dir
        """
        import os

        from keras_bigmodels.checkpoints import read_config
        from keras_bigmodels.models.t5.huggingface import generation_ids, load_t5_backbone

        overrides = dict(backbone_overrides or {})
        if overrides.get("encoder_only"):
            raise ValueError("T5Seq2SeqLM needs the decoder; load a text encoder with "
                             "`T5Backbone.from_huggingface(path, encoder_only=True)`.")
        backbone = load_t5_backbone(path, dtype=dtype, **overrides)
        if backbone.encoder_only:
            raise ValueError(f"`{path}` holds only a T5 encoder (T5EncoderModel); load it "
                             "with `T5Backbone.from_huggingface`.")
        for name, value in generation_ids(read_config(os.fspath(path))).items():
            task_kwargs.setdefault(name, value)
        if "tokenizer" not in task_kwargs and os.path.isfile(
                os.path.join(os.fspath(path), "tokenizer.json")):
            from keras_bigmodels.tokenizers import Tokenizer

            task_kwargs["tokenizer"] = Tokenizer.from_dir(path)
        return cls(backbone, **task_kwargs)
