"""T5Seq2SeqLM: T5 / mT5 / Flan-T5 text-to-text with teacher forcing, generation, HF import."""

import keras

from keras_bigmodels.models.fused_output import FusedOutputLoss
from keras_bigmodels.models.seq2seq_lm import Seq2SeqLM, training_graph
from keras_bigmodels.models.t5.backbone import T5Backbone



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
    default_learning_rate = 3e-4

    def __init__(self, backbone, tokenizer=None, decoder_start_token_id=0, eos_token_id=1,
                 pad_token_id=0, **kwargs):
        if getattr(backbone, "encoder_only", False):
            raise ValueError("`backbone` was built with `encoder_only=True`; T5Seq2SeqLM "
                             "needs the decoder too.")
        inputs, logits = training_graph(backbone)
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
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.compile_extras = {"fused_loss": fused_loss}
        self.configure_fused_loss(fused_loss, self.loss, None if metrics == "auto" else metrics,
                                  kwargs.get("weighted_metrics"))

    # The fused output loss reads the hidden states the output table multiplies.
    def fused_loss_hidden(self, inputs, training):
        hidden = self.backbone(inputs, training=training)["decoder_sequence_output"]
        if self.backbone.scale_decoder_output:
            hidden = hidden * keras.ops.cast(self.backbone.hidden_dim ** -0.5, hidden.dtype)
        return hidden

    def fused_loss_table(self):
        return self.backbone.output_token_embedding.embeddings
