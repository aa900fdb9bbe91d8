"""GPT, GPT-2 and GPT-3 (Radford et al. 2018, 2019; Brown et al. 2020)."""

from keras_bigmodels.models.gpt import config  # noqa: F401  (registers the presets)
from keras_bigmodels.models.gpt.backbone import GPTBackbone, banded_attention_bias
from keras_bigmodels.models.gpt.tasks import GPTCausalLM
