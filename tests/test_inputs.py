"""Bad ids and labels never train silently: every task checks the ranges it declares on the
host (arrays before the first step, datasets and generators at the first bad batch), and
BERT's eager calls name `segment_ids` and its range."""

import keras
import numpy as np
import pytest

from keras_bigmodels.models import (BartBackbone, BartSeq2SeqLM, BertBackbone, BertClassifier,
                                    BertPretrainer, BertQuestionAnswerer, BertTokenClassifier,
                                    GPTBackbone, GPTCausalLM, ImageClassifier, SwinBackbone,
                                    T5Backbone, T5Seq2SeqLM, ViTBackbone)
from keras_bigmodels.models.inputs import InputCheck, LengthOf

VOCABULARY = 40
LENGTH = 8
BATCH = 4


def gpt():
    return GPTCausalLM(GPTBackbone(vocabulary_size=VOCABULARY, num_layers=2, num_heads=2,
                                   hidden_dim=32, intermediate_dim=64,
                                   max_sequence_length=16))


def bert_backbone():
    return BertBackbone(vocabulary_size=VOCABULARY, num_layers=2, num_heads=2, hidden_dim=32,
                        intermediate_dim=64, max_sequence_length=16, dropout=0.0)


def token_ids(seed=0, batch=BATCH):
    return np.random.RandomState(seed).randint(1, VOCABULARY, (batch, LENGTH)).astype("int32")


def bert_inputs(seed=0, batch=BATCH):
    ids = token_ids(seed, batch)
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids),
            "padding_mask": np.ones_like(ids)}


def images(batch=BATCH, size=16):
    return np.random.RandomState(0).normal(size=(batch, size, size, 1)).astype("float32")


def with_value(data, name, index, value):
    """A copy of `data` (a dict or array) with one element of `name` set to `value`."""
    if isinstance(data, dict):
        data = {k: np.array(v) for k, v in data.items()}
        data[name][index] = value
        return data
    data = np.array(data)
    data[index] = value
    return data


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def assert_unchanged_and_finite(model, before):
    after = weights_of(model)
    assert all(np.isfinite(w).all() for w in after)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ declarations
def test_every_task_declares_its_ranges():
    lm = gpt()
    assert lm.input_ranges() == {"token_ids": (0, VOCABULARY)}
    assert lm.label_range() == (0, VOCABULARY)
    backbone = bert_backbone()
    bert = {"token_ids": (0, VOCABULARY), "segment_ids": (0, 2), "padding_mask": (0, 2)}
    classifier = BertClassifier(backbone, num_classes=3)
    assert classifier.input_ranges() == bert and classifier.label_range() == (0, 3)
    assert BertTokenClassifier(backbone, num_classes=5).label_range() == (0, 5)
    pretrainer = BertPretrainer(backbone)
    ranges = pretrainer.input_ranges()
    assert isinstance(ranges.pop("mask_positions")[1], LengthOf) and ranges == bert
    assert pretrainer.label_range() == {"mlm": (0, VOCABULARY), "nsp": (0, 2)}
    qa = BertQuestionAnswerer(backbone).label_range()
    assert set(qa) == {"start_logits", "end_logits"}
    assert qa["start_logits"][1].input_name == "token_ids"
    vit = ImageClassifier(ViTBackbone(image_size=16, patch_size=4, num_layers=1,
                                         num_heads=2, hidden_dim=32, intermediate_dim=64,
                                         num_channels=1), num_classes=7)
    assert vit.label_range() == (0, 7) and not vit.input_ranges()


# ----------------------------------------------------------------- array inputs, per task
def _gpt_case():
    x = token_ids()
    return gpt, x, np.roll(x, -1, axis=1)


def _classifier_case():
    return (lambda: BertClassifier(bert_backbone(), num_classes=3), bert_inputs(),
            np.array([0, 1, 2, 1]))


def _pretrainer_case():
    x = {**bert_inputs(), "mask_positions": np.tile(np.array([[1, 3]]), (BATCH, 1))}
    y = {"mlm": np.full((BATCH, 2), 5), "nsp": np.array([0, 1, 1, 0])}
    return lambda: BertPretrainer(bert_backbone()), x, y


def _token_classifier_case():
    return (lambda: BertTokenClassifier(bert_backbone(), num_classes=5), bert_inputs(),
            np.zeros((BATCH, LENGTH), "int32"))


def _qa_case():
    y = {"start_logits": np.array([0, 1, 2, 3]), "end_logits": np.array([4, 5, 6, 7])}
    return lambda: BertQuestionAnswerer(bert_backbone()), bert_inputs(), y


def _vit_case():
    def build():
        return ImageClassifier(ViTBackbone(image_size=16, patch_size=4, num_layers=2,
                                           num_heads=2, hidden_dim=32, intermediate_dim=64,
                                           num_channels=1), num_classes=3)
    return build, images(), np.array([0, 1, 2, 0])


def _swin_case():
    def build():
        return ImageClassifier(SwinBackbone(image_size=16, patch_size=2, hidden_dim=16,
                                            depths=[2], num_heads=[2], window_size=4,
                                            num_channels=1), num_classes=3)
    return build, images(), np.array([0, 1, 2, 0])


def _seq2seq_data():
    encoder, decoder = token_ids(0), token_ids(1)[:, :6]
    x = {"encoder_token_ids": encoder, "encoder_padding_mask": np.ones_like(encoder),
         "decoder_token_ids": decoder, "decoder_padding_mask": np.ones_like(decoder)}
    return x, np.roll(decoder, -1, axis=1)


def _t5_case():
    def build():
        return T5Seq2SeqLM(T5Backbone(vocabulary_size=VOCABULARY, num_layers=2, num_heads=2,
                                      hidden_dim=32, intermediate_dim=64, dropout=0.0))
    return (build, *_seq2seq_data())


def _bart_case():
    def build():
        return BartSeq2SeqLM(BartBackbone(vocabulary_size=VOCABULARY, num_layers=2,
                                          num_heads=2, hidden_dim=32, intermediate_dim=64,
                                          max_sequence_length=16))
    return (build, *_seq2seq_data())


CASES = {
    "gpt": _gpt_case, "bert_classifier": _classifier_case, "bert_pretrainer": _pretrainer_case,
    "bert_token_classifier": _token_classifier_case, "bert_qa": _qa_case, "vit": _vit_case,
    "swin": _swin_case, "t5": _t5_case, "bart": _bart_case,
}

# (case, "x" or "y", name in the dict or None, index, bad value, text the error must hold)
BAD = [
    ("gpt", "x", None, (1, 2), VOCABULARY, f"`token_ids` holds {VOCABULARY}"),
    ("gpt", "x", None, (0, 0), -1, "`token_ids` holds -1"),
    ("gpt", "y", None, (3, 7), VOCABULARY + 5, f"[0, {VOCABULARY})"),
    ("bert_classifier", "x", "segment_ids", (2, 1), -1, "`segment_ids` holds -1"),
    ("bert_classifier", "x", "segment_ids", (0, 4), 2, "range [0, 2)"),
    ("bert_classifier", "x", "token_ids", (0, 0), VOCABULARY, "`token_ids`"),
    ("bert_classifier", "y", None, (1,), 3, "Label `y` holds 3"),
    ("bert_pretrainer", "x", "mask_positions", (0, 1), LENGTH, "`token_ids`, of length 8"),
    ("bert_pretrainer", "y", "mlm", (2, 0), VOCABULARY, "Label `mlm`"),
    ("bert_pretrainer", "y", "nsp", (3,), 2, "Label `nsp` holds 2"),
    ("bert_token_classifier", "y", None, (1, 3), 5, "[0, 5)"),
    ("bert_qa", "y", "end_logits", (0,), LENGTH, "Label `end_logits`"),
    ("vit", "y", None, (2,), 3, "[0, 3)"),
    ("swin", "y", None, (0,), -1, "holds -1"),
    ("t5", "x", "decoder_token_ids", (1, 2), VOCABULARY, "`decoder_token_ids` holds 40"),
    ("t5", "y", None, (0, 0), -1, "Label `y` holds -1"),
    ("bart", "x", "encoder_token_ids", (0, 3), -2, "`encoder_token_ids` holds -2"),
    ("bart", "y", None, (2, 5), VOCABULARY, f"[0, {VOCABULARY})"),
]


@pytest.mark.parametrize("case,part,name,index,value,text", BAD,
                         ids=[f"{b[0]}-{b[2] or b[1]}={b[4]}" for b in BAD])
def test_bad_arrays_raise_before_the_first_step(case, part, name, index, value, text):
    build, x, y = CASES[case]()
    model = build()
    if part == "x":
        x = with_value(x, name or "token_ids", index, value)
    else:
        y = with_value(y, name, index, value)
    before = weights_of(model)
    with pytest.raises(ValueError, match="outside its range") as error:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert text in str(error.value)
    assert_unchanged_and_finite(model, before)
    assert int(model.optimizer.iterations) == 0


def test_every_data_method_checks():
    model, x, y = _gpt_case()
    model = model()
    bad = with_value(x, None, (0, 0), VOCABULARY)
    calls = [lambda: model.evaluate(bad, y, verbose=0),
             lambda: model.train_on_batch(bad, y),
             lambda: model.test_on_batch(x, with_value(y, None, (0, 0), -3)),
             lambda: model.predict(bad, verbose=0),
             lambda: model.predict_on_batch(bad),
             lambda: model.fit(x, y, validation_data=(bad, y), verbose=0),
             lambda: model.fit(x=bad, y=y, verbose=0)]
    for call in calls:
        with pytest.raises(ValueError, match="`token_ids` holds|`y` holds -3"):
            call()
    assert int(model.optimizer.iterations) == 0


def test_the_loss_ignore_class_is_allowed():
    build, x, y = _token_classifier_case()
    model = build()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  ignore_class=-100))
    y = with_value(y, None, (0, slice(4, None)), -100)
    with pytest.raises(ValueError, match="the ignore value -100 is allowed"):
        model.fit(x, with_value(y, None, (1, 0), -5), epochs=1, verbose=0)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_the_check_reads_labels_as_a_sparse_loss_would():
    check = InputCheck({"token_ids": (0, 10)}, {None: (0, 3)}, ["token_ids"], ["logits"])
    x = np.array([[1, 2]])
    check.check_arrays(x, np.array([[0.0, 1.0, 0.0]]))  # one-hot: in range
    check.check_arrays(x, np.array([[0.1, 0.8, 0.1]]))  # probabilities: not ids
    check.check_arrays(x, np.array([True, False]))
    with pytest.raises(ValueError, match="holds 3 at index"):
        check.check_arrays(x, np.array([1.0, 3.0]))     # float class ids
    with pytest.raises(ValueError, match="integer ids"):
        check.check_arrays(np.array([[1.5, 2.0]]))
    with pytest.raises(ValueError, match="holds 10"):
        check.check_arrays([[1, 10]])                    # nested lists
    with pytest.raises(ValueError, match=r"index \(1,\)"):
        check.check_arrays([x], np.array([0, 7]))        # a 1-element list of inputs


# ----------------------------------------------------- generators, PyDataset, tf.data
BAD_AT = 4


def _lm_batches(bad_at=BAD_AT):
    """Five (x, y) batches; the one at `bad_at` holds an id past the vocabulary."""
    for step in range(5):
        x = token_ids(step)
        if step == bad_at:
            x = with_value(x, None, (1, 5), VOCABULARY + 1)
        yield x, np.roll(x, -1, axis=1)


class StepCounter(keras.callbacks.Callback):
    """Completed training steps (TensorFlow counts `optimizer.iterations` up even for the
    step whose input pipeline failed)."""

    steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def _assert_stopped_before_the_bad_batch(model, error, counter, bad_at=BAD_AT):
    assert f"`token_ids` holds {VOCABULARY + 1} at index (1, 5)" in str(error.value)
    # Good batches trained, checked as they came; the bad one did not (Keras reads a
    # batch or two ahead: peeking at a generator's signature, prefetching on JAX).
    assert 1 <= counter.steps <= bad_at
    assert all(np.isfinite(w).all() for w in weights_of(model))


def test_a_generator_raises_at_its_first_bad_batch():
    model, counter = gpt(), StepCounter()
    with pytest.raises(ValueError, match="outside its range") as error:
        model.fit(_lm_batches(), epochs=1, verbose=0, callbacks=[counter])
    _assert_stopped_before_the_bad_batch(model, error, counter)


def test_a_tf_dataset_raises_at_its_first_bad_batch():
    tf = pytest.importorskip("tensorflow")
    batches = list(_lm_batches())
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])))
    model, counter = gpt(), StepCounter()
    with pytest.raises(ValueError, match="outside its range") as error:
        model.fit(dataset, epochs=1, verbose=0, callbacks=[counter])
    _assert_stopped_before_the_bad_batch(model, error, counter)


class _ClassifierBatches(keras.utils.PyDataset):
    def __init__(self, bad_label_at):
        super().__init__()
        self.bad_label_at = bad_label_at

    @property
    def num_batches(self):
        return 5

    def __getitem__(self, index):
        labels = np.array([0, 1, 2, 1])
        if index == self.bad_label_at:
            labels[2] = 3
        return bert_inputs(index), labels


def test_a_py_dataset_raises_at_its_first_bad_batch():
    model, counter = BertClassifier(bert_backbone(), num_classes=3), StepCounter()
    with pytest.raises(ValueError, match=r"Label `y` holds 3 at index \(2,\)"):
        model.fit(_ClassifierBatches(bad_label_at=BAD_AT), epochs=1, shuffle=False, verbose=0,
                  callbacks=[counter])
    assert 1 <= counter.steps <= BAD_AT
    assert all(np.isfinite(w).all() for w in weights_of(model))


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch DataLoader")
def test_a_torch_dataloader_raises_at_its_first_bad_batch():
    import torch

    batches = list(_lm_batches())
    data = torch.utils.data.TensorDataset(torch.tensor(np.concatenate([b[0] for b in batches])),
                                          torch.tensor(np.concatenate([b[1] for b in batches])))
    model, counter = gpt(), StepCounter()
    with pytest.raises(ValueError, match="outside its range") as error:
        model.fit(torch.utils.data.DataLoader(data, batch_size=BATCH), epochs=1, verbose=0,
                  callbacks=[counter])
    _assert_stopped_before_the_bad_batch(model, error, counter)


# ------------------------------------------------------------------ good data trains
def test_good_data_still_trains_through_the_checks():
    model = gpt()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    pattern = np.tile(np.arange(LENGTH + 1) % 5 + 1, (BATCH, 1)).astype("int32")
    x, y = pattern[:, :-1], pattern[:, 1:]

    def batches():
        for _ in range(12):
            yield x, y

    history = model.fit(batches(), epochs=1, verbose=0)
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=BATCH, epochs=4, verbose=0)
    last = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(history.history["loss"][0]) and last < first < np.log(VOCABULARY)


# --------------------------------------------------------------- BERT eager calls
@pytest.mark.parametrize("value", [-1, 2])
def test_bert_eager_call_names_segment_ids_and_its_range(value):
    backbone = bert_backbone()
    inputs = with_value(bert_inputs(batch=1), "segment_ids", (0, 3), value)
    with pytest.raises(ValueError, match=r"`segment_ids` holds id .*\[0, 1\] \(num_segments=2\)"):
        backbone(inputs)
    with pytest.raises(ValueError, match="`segment_ids`"):
        BertClassifier(backbone, num_classes=2)(inputs)


def test_bert_call_without_segment_ids_says_what_to_pass():
    backbone = bert_backbone()
    inputs = bert_inputs(batch=1)
    del inputs["segment_ids"]
    classifier = BertClassifier(backbone, num_classes=2)
    for model in (backbone, classifier):
        with pytest.raises(ValueError, match=r"missing `segment_ids`: ints in \[0, 2\)"):
            model(inputs)
    with pytest.raises(ValueError, match=r"missing `segment_ids`: ints in \[0, 2\)"):
        classifier.fit(inputs, np.array([1]), epochs=1, verbose=0)
    assert int(classifier.optimizer.iterations) == 0
