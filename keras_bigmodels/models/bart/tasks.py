"""BartSeq2SeqLM: BART with its tied output layer, teacher-forced training, generation."""

import keras

from keras_bigmodels.models.bart.backbone import BartBackbone
from keras_bigmodels.models.seq2seq_lm import Seq2SeqLM, training_graph



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
        inputs, logits = training_graph(backbone)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.set_special_tokens(decoder_start_token_id, eos_token_id, pad_token_id)
        self.compile()
