"""BartSeq2SeqLM: BART with its tied output layer, teacher-forced training, generation."""

import keras

from keras_bigmodels.models.bart.backbone import BartBackbone
from keras_bigmodels.models.fused_output import FusedOutputLoss
from keras_bigmodels.models.seq2seq_lm import Seq2SeqLM, training_graph



@keras.saving.register_keras_serializable(package="keras_bigmodels")
class BartSeq2SeqLM(FusedOutputLoss, Seq2SeqLM):
    """BART for generation: encoder ids + decoder ids -> logits [batch, target, vocabulary].

    Logits are the decoder states times the shared token table plus `final_logits_bias`.
    Fit with teacher forcing on (x, y, sample_weight) from
    `keras_bigmodels.objectives.denoising.BartDenoising` (pretraining) or
    `keras_bigmodels.objectives.text_to_text.text_to_text_batch` (fine-tuning): decoder
    inputs are the targets shifted right behind </s> (BART's decoder start id 2), padding
    weighted out of the loss. `generate()` comes from `Seq2SeqLM`. Training fuses the
    output layer (table and `final_logits_bias`) with the loss where it pays (see
    `compile`'s `fused_loss`).

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
        inputs, logits = training_graph(backbone)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.set_special_tokens(decoder_start_token_id, eos_token_id, pad_token_id)
        self.compile()

    def compile(self, optimizer="auto", loss="auto", metrics="auto", fused_loss="auto",
                **kwargs):
        """Compile; "auto" gives AdamW(1e-4, weight decay 0.01, clipnorm 1.0) and
        cross-entropy from logits (padding is weighted out by the sample weights).

        `fused_loss` ("auto", True or False): train the output layer (shared table plus
        `final_logits_bias`) and the loss as one chunked `linear_cross_entropy`, with no
        [batch, target, vocabulary] logits in the step; see `FusedOutputLoss`.

        Example:
        >>> lm.compile(optimizer=keras.optimizers.AdamW(3e-5), fused_loss=False)
        """
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.compile_extras = {"fused_loss": fused_loss}
        self.configure_fused_loss(fused_loss, self.loss, None if metrics == "auto" else metrics,
                                  kwargs.get("weighted_metrics"))

    # The fused output loss reads what `BartBackbone.logits` multiplies and adds.
    def fused_loss_hidden(self, inputs, training):
        return self.backbone(inputs, training=training)["decoder_sequence_output"]

    def fused_loss_table(self):
        return self.backbone.token_embedding.embeddings

    def fused_loss_bias(self):
        return self.backbone.final_logits_bias.bias
