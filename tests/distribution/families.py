"""Tiny configs and input makers for every registered backbone (pure Python + numpy).

A backbone class without an entry here fails `test_every_backbone_has_a_tiny_config`:
add one line when a family lands, and the sharding tests cover it automatically.
Heads divide by 8 so that both the 1x8 and the 2x4 meshes take Megatron's head split.
"""

import numpy as np


def token_ids(vocabulary_size, batch=8, length=8, seed=0):
    return np.random.RandomState(seed).randint(1, vocabulary_size, (batch, length)).astype("int32")


def images(size, batch=8, channels=3, seed=0):
    return np.random.RandomState(seed).rand(batch, size, size, channels).astype("float32")


def bert_inputs(batch=8, length=8, seed=0, two_segments=True):
    ids = token_ids(97, batch, length, seed)
    mask = np.ones_like(ids)
    mask[1, -3:] = 0
    segments = np.zeros_like(ids)
    segments[:, length // 2:] = int(two_segments)
    return {"token_ids": ids * mask, "segment_ids": segments * mask, "padding_mask": mask}


def seq2seq_inputs(vocabulary_size, batch=8, length=8, seed=0):
    source = token_ids(vocabulary_size, batch, length, seed)
    target = token_ids(vocabulary_size, batch, length, seed + 1)
    return {"encoder_token_ids": source, "encoder_padding_mask": np.ones_like(source),
            "decoder_token_ids": target, "decoder_padding_mask": np.ones_like(target)}


def univl_inputs(batch=8, seed=0):
    ids = token_ids(97, batch, 8, seed)
    frames = np.random.RandomState(seed).rand(batch, 6, 12).astype("float32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids), "frames": frames,
            "frame_mask": np.ones((batch, 6), "int32"), "decoder_token_ids": ids[:, ::-1],
            "decoder_padding_mask": np.ones_like(ids)}


# backbone class name -> (tiny constructor kwargs, inputs maker(batch, seed)).
TINY_BACKBONES = {
    "GPTBackbone": (dict(vocabulary_size=101, num_layers=1, num_heads=8, hidden_dim=32,
                         intermediate_dim=64, max_sequence_length=16, dropout=0.0),
                    lambda batch=8, seed=0: token_ids(101, batch, 8, seed)),
    "BertBackbone": (dict(vocabulary_size=97, num_layers=1, num_heads=8, hidden_dim=32,
                          intermediate_dim=64, max_sequence_length=16, dropout=0.0),
                     lambda batch=8, seed=0: bert_inputs(batch, 8, seed)),
    "RobertaBackbone": (dict(vocabulary_size=97, num_layers=1, num_heads=8, hidden_dim=32,
                             intermediate_dim=64, max_sequence_length=20, dropout=0.0),
                        lambda batch=8, seed=0: bert_inputs(batch, 8, seed, two_segments=False)),
    "AlbertBackbone": (dict(vocabulary_size=97, num_layers=1, num_heads=8, hidden_dim=32,
                            intermediate_dim=64, max_sequence_length=16, embedding_dim=16),
                       lambda batch=8, seed=0: bert_inputs(batch, 8, seed)),
    "ViTBackbone": (dict(image_size=16, patch_size=4, num_layers=1, num_heads=8, hidden_dim=32,
                         intermediate_dim=64),
                    lambda batch=8, seed=0: images(16, batch, 3, seed)),
    "SwinBackbone": (dict(image_size=16, patch_size=2, hidden_dim=16, depths=[1, 1],
                          num_heads=[8, 8], window_size=4),
                     lambda batch=8, seed=0: images(16, batch, 3, seed)),
    "T5Backbone": (dict(vocabulary_size=101, num_layers=1, num_heads=8, hidden_dim=32,
                        intermediate_dim=64, gated=True, tie_embeddings=False, dropout=0.0),
                   lambda batch=8, seed=0: seq2seq_inputs(101, batch, 8, seed)),
    "BartBackbone": (dict(vocabulary_size=101, num_layers=1, num_heads=8, hidden_dim=32,
                          intermediate_dim=64, max_sequence_length=16, dropout=0.0),
                     lambda batch=8, seed=0: seq2seq_inputs(101, batch, 8, seed)),
    # Diffusion denoisers: [images, timesteps(, text states)]; 8 heads at every level.
    "UNet2D": (dict(block_out_channels=(32, 64), attention_levels=(False, True),
                    layers_per_block=1, attention_head_dim=8, norm_num_groups=8),
               lambda batch=8, seed=0: [images(8, batch, 3, seed),
                                        np.arange(batch, dtype="int32") * 100]),
    "UNet2DCondition": (dict(block_out_channels=(32, 64), cross_attention_levels=(True, True),
                             layers_per_block=1, num_heads=8, cross_attention_dim=16,
                             norm_num_groups=8),
                        lambda batch=8, seed=0: [
                            images(8, batch, 4, seed), np.arange(batch, dtype="int32") * 100,
                            np.random.RandomState(seed).rand(batch, 4, 16).astype("float32")]),
    "DiT": (dict(image_size=8, patch_size=2, in_channels=3, hidden_dim=32, num_layers=1,
                 num_heads=8, num_classes=11),
            lambda batch=8, seed=0: [images(8, batch, 3, seed),
                                     np.arange(batch, dtype="int32") * 100,
                                     np.arange(batch, dtype="int32") % 11]),
    "VideoBERTBackbone": (dict(text_vocabulary_size=61, visual_vocabulary_size=36, num_layers=1,
                               num_heads=8, hidden_dim=32, intermediate_dim=64,
                               max_sequence_length=16, dropout=0.0),
                          lambda batch=8, seed=0: bert_inputs(batch, 8, seed)),
    "UniVLBackbone": (dict(vocabulary_size=97, video_feature_dim=12, num_text_layers=1,
                           num_video_layers=1, num_cross_layers=1, num_decoder_layers=1,
                           num_heads=8, hidden_dim=32, intermediate_dim=64,
                           max_sequence_length=16, max_frames=8, dropout=0.0),
                      lambda batch=8, seed=0: univl_inputs(batch, seed)),
    "CLIPBackbone": (dict(image_size=16, patch_size=4, vision_num_layers=1, vision_num_heads=8,
                          vision_hidden_dim=32, vision_intermediate_dim=64, vocabulary_size=101,
                          max_sequence_length=16, text_num_layers=1, text_num_heads=8,
                          text_hidden_dim=32, text_intermediate_dim=64, projection_dim=32),
                     lambda batch=8, seed=0: {"images": images(16, batch, 3, seed),
                                              "token_ids": token_ids(101, batch, 8, seed)}),
    "CLIPTextEncoder": (dict(vocabulary_size=101, max_sequence_length=16, num_layers=1,
                             num_heads=8, hidden_dim=32, intermediate_dim=64),
                        lambda batch=8, seed=0: token_ids(101, batch, 8, seed)),
    "CLIPVisionEncoder": (dict(image_size=16, patch_size=4, num_layers=1, num_heads=8,
                               hidden_dim=32, intermediate_dim=64),
                          lambda batch=8, seed=0: images(16, batch, 3, seed)),
}


def all_backbone_classes():
    """Every concrete subclass of `Backbone` or `SubclassedBackbone` (recursively) that the
    package registers."""
    import keras_bigmodels.models as models

    found = []
    stack = list(models.Backbone.__subclasses__()) + list(models.SubclassedBackbone.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in found:
            found.append(cls)
            stack.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)
