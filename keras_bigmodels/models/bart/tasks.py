"""BartSeq2SeqLM: BART with its tied output layer, teacher-forced training, generation."""

import keras

from keras_bigmodels.losses import SparseCrossEntropy
from keras_bigmodels.models.bart.backbone import BartBackbone
from keras_bigmodels.models.seq2seq_lm import Seq2SeqLM

INPUT_NAMES = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
               "decoder_padding_mask")


@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BartSeq2SeqLM(Seq2SeqLM):
    """BART for generation: encoder ids + decoder ids -> logits [batch, target, vocabulary].

    Logits are the decoder states times the shared token table plus `final_logits_bias`.
    Fit with teacher forcing on (x, y, sample_weight) from
    `keras_bigmodels.objectives.denoising.BartDenoising` (pretraining) or
    `keras_bigmodels.objectives.text_to_text.text_to_text_batch` (fine-tuning): decoder
    inputs are the targets shifted right behind </s> (BART's decoder start id 2), padding
    weighted out of the loss. `generate()` comes from `Seq2SeqLM`. Training keeps the
    logits path: the fused output loss (`linear_cross_entropy`) has no output bias.

    Args:
        backbone: a `BartBackbone`.
        tokenizer: optional `keras_bigmodels.tokenizers.Tokenizer`; enables strings in
            `generate`.
        decoder_start_token_id, eos_token_id, pad_token_id: BART's 2, 2 and 1.

    Example:
    >>> lm = BartSeq2SeqLM(BartBackbone(100, 2, 2, 32, 64, max_sequence_length=32))
    >>> lm.generate([[0, 5, 6, 2]], max_new_tokens=4)
    """

    backbone_cls = BartBackbone

    def __init__(self, backbone, tokenizer=None, decoder_start_token_id=2, eos_token_id=2,
                 pad_token_id=1, **kwargs):
        inputs = {name: backbone.input[name] for name in INPUT_NAMES}
        hidden = backbone(inputs)["decoder_sequence_output"]
        logits = backbone.logits(hidden)
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.set_special_tokens(decoder_start_token_id, eos_token_id, pad_token_id)
        self.compile()

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Compile; "auto" gives AdamW(1e-4, weight decay 0.01, clipnorm 1.0) and
        cross-entropy from logits (padding is weighted out by the sample weights).

        Example:
        >>> lm.compile(optimizer=keras.optimizers.AdamW(3e-5))  # BART's fine-tuning rate
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-4, weight_decay=0.01, clipnorm=1.0)
        if loss == "auto":
            loss = SparseCrossEntropy()
        if metrics == "auto":
            metrics = None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def logits_from_hidden(self, hidden):
        return keras.ops.cast(self.backbone.logits(hidden), "float32")

    # Hugging Face ---------------------------------------------------------------------
    @classmethod
    def from_huggingface(cls, path, backbone_overrides=None, dtype=None, **task_kwargs):
        """A `BartForConditionalGeneration` checkpoint dir (config.json + model.safetensors
        [+ tokenizer.json]); `model_type` must be "bart".

        Args:
            path: a local directory written by `save_pretrained`.
            backbone_overrides: BartBackbone kwargs to change (e.g. `{"dropout": 0.0}`).
            dtype: the backbone's dtype policy (e.g. "bfloat16").
            **task_kwargs: task kwargs; the tokenizer defaults to the directory's
                tokenizer.json (if any) and the special ids to config.json's.

        Example:
        >>> lm = BartSeq2SeqLM.from_huggingface("bart/")  # a local save_pretrained dir
        """
        from keras_bigmodels.checkpoints import read_config
        from keras_bigmodels.models.bart.huggingface import (generation_ids,
                                                             load_bart_backbone, load_tokenizer)

        backbone = load_bart_backbone(path, dtype=dtype, **(backbone_overrides or {}))
        start, eos, pad = generation_ids(read_config(str(path)))
        task_kwargs.setdefault("decoder_start_token_id", start)
        task_kwargs.setdefault("eos_token_id", eos)
        task_kwargs.setdefault("pad_token_id", pad)
        if "tokenizer" not in task_kwargs:
            task_kwargs["tokenizer"] = load_tokenizer(path)
        return cls(backbone, **task_kwargs)
