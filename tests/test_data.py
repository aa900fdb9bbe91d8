import numpy as np
import pytest

from keras_bigmodels import data
from keras_bigmodels.tokenizers import Tokenizer


def test_load_text_documents_and_sentences():
    splits = data.load_text(split=None)
    train, validation = splits["train"], splits["validation"]
    assert len(train) > 100 and len(validation) > 10
    assert all(isinstance(s, str) and s for d in train for s in d)
    assert all(len(d) >= 2 for d in train), "NSP needs documents of several sentences"
    assert not set(map(tuple, train)) & set(map(tuple, validation))
    assert sum(len(s) for d in train for s in d) > 300_000
    with pytest.raises(ValueError, match="split"):
        data.load_text("test")


def test_load_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("Title\n=====\n\nOne sentence. Another one here.\n\nMore text.")
    (tmp_path / "b.md").write_text("Hello there. General Kenobi.")
    docs = data.load_text_files(tmp_path)
    assert ["One sentence.", "Another one here.", "More text."] in [d[1:] for d in docs]
    assert ["Hello there.", "General Kenobi."] in docs
    with pytest.raises(ValueError, match="does not exist"):
        data.load_text_files(tmp_path / "missing")


def test_load_digits_resized_with_captions():
    digits = data.load_digits(image_size=16, channels=3)
    assert digits["x_train"].shape[1:] == (16, 16, 3)
    assert len(digits["x_train"]) + len(digits["x_test"]) == 1797
    assert digits["x_train"].dtype == np.float32
    assert 0.0 <= digits["x_train"].min() and digits["x_train"].max() <= 1.0
    label = digits["y_train"][0]
    assert digits["captions_train"][0] == f"a handwritten digit {digits['class_names'][label]}"
    with pytest.raises(ValueError, match="channels"):
        data.load_digits(channels=2)


def test_load_image_folder(tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / name / "x.png")
    images, labels, names = data.load_image_folder(tmp_path, image_size=8)
    assert images.shape == (2, 8, 8, 3) and list(labels) == [0, 1] and names == ["cat", "dog"]


def test_tokenizers_train_save_load(tmp_path):
    texts = data.documents_to_texts(data.load_text("validation"))
    bpe = Tokenizer.train_bpe(texts, vocabulary_size=400)
    assert bpe.vocabulary_size == 400 and bpe.eos_token_id == 0
    assert bpe.decode(bpe.encode("def f(x): return x")) == "def f(x): return x"
    bpe.save(tmp_path / "bpe")
    again = Tokenizer.from_dir(tmp_path / "bpe")
    assert again.encode(["a b", "c"]) == bpe.encode(["a b", "c"])
    restored = Tokenizer.from_config(bpe.get_config())
    assert restored.encode("hello") == bpe.encode("hello")

    wordpiece = Tokenizer.train_wordpiece(texts, vocabulary_size=500)
    assert (wordpiece.pad_token_id, wordpiece.unk_token_id, wordpiece.cls_token_id,
            wordpiece.sep_token_id, wordpiece.mask_token_id) == (0, 1, 2, 3, 4)
    vocab = [wordpiece.id_to_token(i) for i in range(wordpiece.vocabulary_size)]
    (tmp_path / "wp").mkdir()
    (tmp_path / "wp" / "vocab.txt").write_text("\n".join(vocab))
    from_vocab = Tokenizer.from_dir(tmp_path / "wp")
    assert from_vocab.encode("the function") == wordpiece.encode("the function")
    with pytest.raises(ValueError, match="No tokenizer"):
        Tokenizer.from_dir(tmp_path)
