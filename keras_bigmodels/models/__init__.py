"""The task bases and the model families (each registers its presets in its config.py)."""

from keras_bigmodels.models.base import Backbone, SubclassedBackbone, SubclassedTask, Task  # noqa: F401
from keras_bigmodels.models.causal_lm import CausalLM  # noqa: F401
from keras_bigmodels.models.seq2seq_lm import Seq2SeqLM  # noqa: F401
from keras_bigmodels.models.image_classifier import ImageClassifier
from keras_bigmodels.models.vit import ViTBackbone
from keras_bigmodels.models.swin import SwinBackbone
from keras_bigmodels.models.bert import (AlbertBackbone, BertBackbone, BertClassifier,  # noqa: F401
                                         BertPretrainer, BertQuestionAnswerer,
                                         BertTokenClassifier, RobertaBackbone)
from keras_bigmodels.models.gpt import GPTBackbone, GPTCausalLM  # noqa: F401
from keras_bigmodels.models.bart import BartBackbone, BartSeq2SeqLM  # noqa: F401
from keras_bigmodels.models.t5 import T5Backbone, T5Seq2SeqLM  # noqa: F401
from keras_bigmodels.models.clip import (CLIPBackbone, CLIPContrastiveTask,  # noqa: F401
                                         CLIPTextEncoder, CLIPVisionEncoder)
from keras_bigmodels.models.diffusion import (AutoencoderKL, UNet2D,  # noqa: F401
                                              UNet2DCondition)
from keras_bigmodels.models.diffusion import DiffusionModel, DiT  # noqa: F401
from keras_bigmodels.models.diffusion import (DiffusionPrior, ImageEmbeddingDecoder,  # noqa: F401
                                             LatentTextToImage, PriorTransformer,
                                             UnCLIPPipeline)
from keras_bigmodels.models.univl import UniVLBackbone, UniVLPretrainer  # noqa: F401
from keras_bigmodels.models.videobert import (VideoBERTBackbone,  # noqa: F401
                                              VideoBERTPretrainer, VideoTokenizer)
