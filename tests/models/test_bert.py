import os

import keras
import numpy as np
import pytest

from keras_bigmodels import flops
from keras_bigmodels.models import (AlbertBackbone, BertBackbone, BertClassifier,
                                    BertPretrainer, BertQuestionAnswerer, BertTokenClassifier,
                                    RobertaBackbone)
from tests.testing import (assert_close, assert_saved_model_matches,
                           perturb_norms_and_biases, to_numpy)

TINY = dict(vocabulary_size=97, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
            max_sequence_length=16, dropout=0.0)


def make_inputs(batch=2, length=8, vocabulary_size=97, pad=0, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocabulary_size, size=(batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    mask[1, length - 3:] = 0  # right padding on the second row
    ids[mask == 0] = pad
    segments = np.zeros_like(ids)
    segments[:, length // 2:] = 1
    return {"token_ids": ids, "segment_ids": segments * mask, "padding_mask": mask}


@pytest.fixture(scope="module")
def backbone():
    return BertBackbone(**TINY)


# ---------------------------------------------------------------- backbone
def test_backbone_outputs_and_padding_invariance(backbone):
    inputs = make_inputs()
    out = backbone(inputs)
    assert out["sequence_output"].shape == (2, 8, 32)
    assert out["pooled_output"].shape == (2, 32)
    # Real tokens must not see padding: changing padded ids leaves them unchanged.
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["token_ids"][1, -3:] = 5
    again = backbone(changed)
    assert_close(to_numpy(again["sequence_output"])[1, :5],
                 to_numpy(out["sequence_output"])[1, :5], atol=1e-5)


@pytest.mark.parametrize("preset", ["bert-base-uncased", "bert-large-uncased",
                                    "bert-base-cased", "albert-base", "roberta-base",
                                    "bert-tiny", "albert-xxlarge"])
def test_preset_param_counts_are_analytic(preset):
    expected = {"bert-base-uncased": 109_482_240, "bert-large-uncased": 335_141_888,
                "bert-base-cased": 108_310_272, "albert-base": 11_683_584,
                "roberta-base": 124_645_632}
    if preset in expected:
        assert flops.count_params(preset) == expected[preset]


@pytest.mark.parametrize("preset", ["bert-tiny", "albert-base"])
def test_preset_count_params_matches_model(preset):
    model = BertBackbone.from_preset(preset)
    assert model.count_params() == flops.count_params(preset)


def test_albert_shares_one_block():
    albert = AlbertBackbone(**{**TINY, "num_layers": 3}, embedding_dim=16)
    bert = BertBackbone(**{**TINY, "num_layers": 1}, embedding_dim=16)
    assert albert.count_params() == bert.count_params()
    assert albert.transformer_layers[0] is albert.transformer_layers[2]
    assert albert.count_params() == flops.count_params(
        {"family": "bert", **albert.get_config()})


def test_bad_arguments_raise_clear_errors(backbone):
    with pytest.raises(ValueError, match="num_heads"):
        BertBackbone(**{**TINY, "num_heads": 3})
    with pytest.raises(ValueError, match="activation"):
        BertBackbone(**{**TINY, "activation": "gelu2"})
    with pytest.raises(ValueError, match="Unknown preset"):
        BertBackbone.from_preset("bert-huge")
    bad = make_inputs()
    bad["token_ids"][0, 0] = 97
    with pytest.raises(ValueError, match="vocabulary"):
        backbone(bad)
    with pytest.raises(ValueError, match="max_sequence_length"):
        backbone(make_inputs(length=20))


def test_backbone_save_load(backbone, tmp_path):
    assert_saved_model_matches(backbone, make_inputs(), tmp_path)


def test_roberta_save_load(tmp_path):
    model = RobertaBackbone(**TINY)
    inputs = make_inputs(pad=1)
    inputs["segment_ids"] = np.zeros_like(inputs["segment_ids"])  # RoBERTa has one segment
    restored = assert_saved_model_matches(model, inputs, tmp_path)
    assert isinstance(restored, RobertaBackbone) and restored.position_offset == 2


# ------------------------------------------------------------ tasks
def test_task_shapes_and_save_load(backbone, tmp_path):
    inputs = make_inputs()
    classifier = BertClassifier.from_backbone(backbone, num_classes=3)
    assert classifier(inputs).shape == (2, 3)
    assert BertTokenClassifier(backbone, num_classes=4)(inputs).shape == (2, 8, 4)
    qa = BertQuestionAnswerer(backbone)(inputs)
    assert qa["start_logits"].shape == (2, 8)
    assert to_numpy(qa["end_logits"])[1, -1] < -1e8  # padding cannot be a span end
    pretrainer = BertPretrainer(backbone)
    out = pretrainer({**inputs, "mask_positions": np.array([[1, 2], [3, 0]], "int32")})
    assert out["mlm"].shape == (2, 2, 97) and out["nsp"].shape == (2, 2)
    assert_saved_model_matches(classifier, inputs, tmp_path)


def test_freeze_backbone():
    model = BertClassifier(BertBackbone(**TINY), num_classes=2, freeze_backbone=True)
    assert [w.path for w in model.trainable_weights] == ["classifier/kernel", "classifier/bias"]


def test_sentence_task_defaults():
    assert BertPretrainer(RobertaBackbone(**TINY)).sentence_task is None
    assert BertPretrainer(AlbertBackbone(**TINY, embedding_dim=16)).sentence_task == "sop"


# ------------------------------------------------------------ Hugging Face parity
HF_SMALL = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=24, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)


def _hf_reference(kind, head, tmp_path):
    """Save a random-init transformers model; return (dir, outputs on our test inputs)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config_cls, model_cls = {
        ("bert", "base"): ("BertConfig", "BertModel"),
        ("bert", "pretraining"): ("BertConfig", "BertForPreTraining"),
        ("roberta", "base"): ("RobertaConfig", "RobertaModel"),
        ("roberta", "pretraining"): ("RobertaConfig", "RobertaForMaskedLM"),
        ("albert", "base"): ("AlbertConfig", "AlbertModel"),
        ("albert", "pretraining"): ("AlbertConfig", "AlbertForPreTraining"),
        ("bert", "classifier"): ("BertConfig", "BertForSequenceClassification"),
        ("roberta", "classifier"): ("RobertaConfig", "RobertaForSequenceClassification"),
        ("albert", "classifier"): ("AlbertConfig", "AlbertForSequenceClassification"),
        ("bert", "tokens"): ("BertConfig", "BertForTokenClassification"),
        ("roberta", "tokens"): ("RobertaConfig", "RobertaForTokenClassification"),
        ("bert", "qa"): ("BertConfig", "BertForQuestionAnswering"),
        ("roberta", "qa"): ("RobertaConfig", "RobertaForQuestionAnswering"),
    }[(kind, head)]
    extra = {"albert": dict(embedding_size=16, hidden_act="gelu_new"),
             "roberta": dict(pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5),
             "bert": dict(layer_norm_eps=1e-7)}[kind]
    if head in ("classifier", "tokens"):
        extra["num_labels"] = 3  # not for pretraining: ALBERT's SOP head has num_labels too
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**HF_SMALL, **extra)
    model = getattr(transformers, model_cls)(config).eval()
    # Random-init LayerNorms are (1, 0): perturb them so the test would see a swap.
    perturb_norms_and_biases(model)
    path = os.path.join(str(tmp_path), f"{kind}_{head}")
    model.save_pretrained(path)
    pad = 1 if kind == "roberta" else 0
    inputs = make_inputs(pad=pad, length=10)
    if kind == "roberta":
        inputs["segment_ids"] = np.zeros_like(inputs["segment_ids"])
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(inputs["token_ids"], dtype=torch.long),
            token_type_ids=torch.tensor(inputs["segment_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["padding_mask"], dtype=torch.long),
            output_hidden_states=True,
        )
    return path, inputs, out


@pytest.mark.parametrize("kind", ["bert", "roberta", "albert"])
def test_huggingface_backbone_matches(kind, tmp_path):
    path, inputs, reference = _hf_reference(kind, "base", tmp_path)
    backbone = BertBackbone.from_huggingface(path)
    out = to_numpy(backbone(inputs))
    # Every position, padding included (RoBERTa numbers padding positions as HF does).
    assert_close(out["sequence_output"], reference.last_hidden_state.numpy(), atol=1e-4)
    assert_close(out["pooled_output"], reference.pooler_output.numpy(), atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "roberta", "albert"])
def test_huggingface_pretraining_heads_match(kind, tmp_path):
    path, inputs, reference = _hf_reference(kind, "pretraining", tmp_path)
    pretrainer = BertPretrainer.from_huggingface(path)
    positions = np.tile(np.arange(10, dtype="int32"), (2, 1))
    out = to_numpy(pretrainer({**inputs, "mask_positions": positions}))
    logits = reference.logits if kind == "roberta" else reference.prediction_logits
    assert_close(out["mlm"], logits.numpy(), atol=1e-4)
    if kind != "roberta":
        name = {"bert": "nsp", "albert": "sop"}[kind]
        expected = getattr(reference, "seq_relationship_logits", None)
        expected = reference.sop_logits if expected is None else expected
        assert_close(out[name], expected.numpy(), atol=1e-4)
    # A pretraining checkpoint loads as a backbone too, its heads ignored.
    BertBackbone.from_huggingface(path)


@pytest.mark.parametrize("kind", ["bert", "roberta", "albert"])
def test_huggingface_sequence_classifiers_match(kind, tmp_path):
    path, inputs, reference = _hf_reference(kind, "classifier", tmp_path)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # RoBERTa's missing (unused) pooler is not news
        classifier = BertClassifier.from_huggingface(path)
    assert classifier.num_classes == 3
    assert classifier.head == ("roberta" if kind == "roberta" else "pooler")
    assert_close(classifier(inputs), reference.logits.numpy(), atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_huggingface_token_classifiers_match(kind, tmp_path):
    path, inputs, reference = _hf_reference(kind, "tokens", tmp_path)
    tagger = BertTokenClassifier.from_huggingface(path)
    assert tagger.num_classes == 3
    assert_close(tagger(inputs), reference.logits.numpy(), atol=1e-4)
    # One signature: backbone overrides, dtype and task kwargs apart.
    tagger = BertTokenClassifier.from_huggingface(path, backbone_overrides={"dropout": 0.3},
                                                  dtype="float32", dropout=0.2)
    assert tagger.backbone.dropout == 0.3 and tagger.dropout == 0.2


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_huggingface_question_answerers_match(kind, tmp_path):
    path, inputs, reference = _hf_reference(kind, "qa", tmp_path)
    qa = BertQuestionAnswerer.from_huggingface(path)
    out = to_numpy(qa(inputs))
    real = inputs["padding_mask"].astype(bool)  # ours masks padding out of the spans
    for name in ("start_logits", "end_logits"):
        assert_close(out[name][real], getattr(reference, name).numpy()[real], atol=1e-4)
        assert (out[name][~real] < -1e8).all()


def test_huggingface_heads_refuse_other_tasks(tmp_path):
    path, _, _ = _hf_reference("bert", "qa", tmp_path)
    with pytest.raises(ValueError, match="BertForQuestionAnswering checkpoint; "
                                         "BertTokenClassifier.from_huggingface reads"):
        BertTokenClassifier.from_huggingface(path)
    path, _, _ = _hf_reference("roberta", "tokens", tmp_path)
    with pytest.raises(ValueError, match="RobertaForTokenClassification.*RobertaForQuestion"):
        BertQuestionAnswerer.from_huggingface(path)


def test_roberta_classifier_head_save_load(tmp_path):
    model = BertClassifier(RobertaBackbone(**TINY), num_classes=3)
    assert model.head == "roberta" and model.head_dense is not None
    inputs = make_inputs(pad=1)
    inputs["segment_ids"] = np.zeros_like(inputs["segment_ids"])
    restored = assert_saved_model_matches(model, inputs, tmp_path)
    assert restored.head == "roberta"
    with pytest.raises(ValueError, match="head"):
        BertClassifier(BertBackbone(**TINY), num_classes=2, head="mean")


def test_huggingface_classifier_rejects_other_heads(tmp_path):
    path, _, _ = _hf_reference("bert", "tokens", tmp_path)
    with pytest.raises(ValueError, match="BertForTokenClassification.*RobertaForSequence"):
        BertClassifier.from_huggingface(path)
    base, _, _ = _hf_reference("roberta", "base", tmp_path)
    with pytest.raises(ValueError, match="RobertaModel"):
        BertClassifier.from_huggingface(base)


def test_huggingface_classifier_and_errors(tmp_path):
    path, inputs, reference = _hf_reference("bert", "classifier", tmp_path)

    import json

    from safetensors.numpy import load_file, save_file
    weights = load_file(os.path.join(path, "model.safetensors"))
    # Older transformers save buffers and tied decoders: accepted and ignored.
    extra = {**weights, "bert.embeddings.position_ids": np.arange(24)[None],
             "cls.predictions.decoder.weight": weights["bert.embeddings.word_embeddings.weight"]}
    save_file(extra, os.path.join(path, "model.safetensors"))
    BertBackbone.from_huggingface(path)

    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**config, "model_type": "gpt2"}, f)
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        BertBackbone.from_huggingface(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)

    weights["bert.encoder.layer.5.output.dense.weight"] = np.zeros((2, 2), "float32")
    del weights["bert.pooler.dense.bias"]
    save_file(weights, os.path.join(path, "model.safetensors"))
    with pytest.raises(ValueError, match="(?s)Missing.*pooler.dense.bias.*Unexpected.*layer.5"):
        BertBackbone.from_huggingface(path)


# ------------------------------------------------------------ training
def test_pretrainer_fit_learns_mlm_and_nsp():
    from keras_bigmodels.models.bert import BertPretrainingDataset
    from keras_bigmodels.objectives.sentence_pairs import next_sentence_pairs

    rng = np.random.default_rng(0)
    # Each document repeats its own two tokens: masked tokens are predictable from their
    # neighbours and a random "next sentence" comes visibly from another document.
    documents = [[[int(5 + 2 * d + rng.integers(2))] * 4 for _ in range(6)] for d in range(40)]
    pairs = next_sentence_pairs(documents, 16, cls_token_id=2, sep_token_id=3, rng=0)
    data = BertPretrainingDataset(pairs, batch_size=16, sentence_task="nsp",
                                  vocabulary_size=97, mask_token_id=4,
                                  special_token_ids=(0, 1, 2, 3))
    pretrainer = BertPretrainer(BertBackbone(**TINY))
    pretrainer.compile(learning_rate=1e-2)
    history = pretrainer.fit(data, epochs=6, verbose=0).history
    assert history["mlm_loss"][-1] < history["mlm_loss"][0] - 0.4
    assert history["mlm_accuracy"][-1] > history["mlm_accuracy"][0]
    assert np.all(np.isfinite(history["loss"]))


def test_roberta_pretrainer_fit_without_sentence_task():
    from keras_bigmodels.models.bert import BertPretrainingDataset
    from keras_bigmodels.objectives.sentence_pairs import full_sentence_packing

    rng = np.random.default_rng(0)
    documents = [[[int(5 + 2 * d + rng.integers(2))] * 4 for _ in range(6)] for d in range(40)]
    packed = full_sentence_packing(documents, 16, cls_token_id=0, sep_token_id=2,
                                   pad_token_id=1)
    packed = {k: np.tile(v, (4, 1)) for k, v in packed.items()}  # masked 4 ways per epoch
    data = BertPretrainingDataset(packed, batch_size=16, sentence_task=None,
                                  vocabulary_size=97, mask_token_id=4,
                                  special_token_ids=(0, 1, 2, 3))
    pretrainer = BertPretrainer(RobertaBackbone(**TINY))
    assert pretrainer.sentence_task is None
    pretrainer.compile(learning_rate=1e-2)
    history = pretrainer.fit(data, epochs=6, verbose=0).history
    # The same metric name as with NSP/SOP, although Keras does not prefix a single output.
    assert history["mlm_accuracy"][-1] > history["mlm_accuracy"][0]
    assert history["loss"][-1] < history["loss"][0] - 0.4
