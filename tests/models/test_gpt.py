import numpy as np
import pytest
import keras

from keras_bigmodels import flops
from keras_bigmodels.evaluation import build_prompt, evaluate_multiple_choice, score_choices
from keras_bigmodels.models import GPTBackbone, GPTCausalLM
from keras_bigmodels.metrics import Perplexity
from keras_bigmodels.models.gpt import banded_attention_bias
from keras_bigmodels.models.gpt.config import GPT3_PAPER_PARAMS, GPT3_SIZES
from keras_bigmodels.objectives.causal_lm import CausalLMBatches, pack_documents
from tests.testing import (assert_close, assert_saved_model_matches, perturb_norms_and_biases,
                           to_numpy)

VOCAB = 101
SMALL = dict(vocabulary_size=VOCAB, num_layers=2, num_heads=4, hidden_dim=32,
             intermediate_dim=64, max_sequence_length=32, dropout=0.0)


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(1)
    return GPTCausalLM(GPTBackbone(**SMALL))


def uncached_greedy(model, row, max_new_tokens):
    # One fixed, right-padded shape (causal attention ignores the padding) so that eager
    # backends do not recompile per length.
    row = list(row)
    padded = np.zeros((1, 16), "int32")
    for _ in range(max_new_tokens):
        padded[0, :len(row)] = row
        logits = to_numpy(model(padded))
        row.append(int(np.argmax(logits[0, len(row) - 1])))
    return row


def test_logits_shape_and_preset_counts(lm):
    assert tuple(lm(np.ones((2, 7), "int32")).shape) == (2, 7, VOCAB)
    expected = {"gpt2-small": 124_439_808, "gpt2-medium": 354_823_168,
                "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200, "gpt1": 116_534_784}
    for name, count in expected.items():
        assert flops.count_params(name) == count
    for name in GPT3_SIZES:
        assert abs(flops.count_params(name) / GPT3_PAPER_PARAMS[name] - 1) < 0.02, name


@pytest.mark.parametrize("overrides", [
    {}, {"normalize_first": False}, {"local_attention_window": 4, "key_dim": 16},
])
def test_analytic_count_equals_count_params(overrides):
    config = {**SMALL, **overrides}
    model = GPTBackbone(**config)
    assert flops.count_params({**config, "family": "gpt"}) == model.count_params()
    if overrides.get("normalize_first") is False:
        assert model.final_norm is None


def test_banded_attention():
    bias = to_numpy(banded_attention_bias(4, 4, window=2))[0, 0]
    assert (bias[np.tril_indices(4, -2)] < -1e8).all() and (np.diag(bias) == 0).all()
    ids = np.random.randint(0, VOCAB, (2, 12)).astype("int32")
    dense = GPTBackbone(**SMALL)
    wide = GPTBackbone(**SMALL, local_attention_window=32)
    narrow = GPTBackbone(**SMALL, local_attention_window=2)
    wide.set_weights(dense.get_weights())
    narrow.set_weights(dense.get_weights())
    assert_close(wide(ids), dense(ids), atol=1e-5)
    assert not np.allclose(to_numpy(narrow(ids)), to_numpy(dense(ids)), atol=1e-3)
    # The cache path applies the same band: greedy equals the uncached loop.
    lm = GPTCausalLM(narrow)
    assert lm.generate([[3, 4, 5, 6]], max_new_tokens=6)[0] == uncached_greedy(lm, [3, 4, 5, 6], 6)


def test_greedy_equals_uncached_argmax_loop_with_ragged_prompts(lm):
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [1]]
    out = lm.generate(prompts, max_new_tokens=5)
    for prompt, row in zip(prompts, out):
        assert row == uncached_greedy(lm, prompt, 5)
    array = lm.generate(np.asarray([[5, 6, 7]], "int32"), max_new_tokens=5)
    assert array.shape == (1, 8) and array[0].tolist() == out[0]


def test_samplers_beams_and_stop_tokens(lm):
    prompts = [[5, 6, 7], [8, 9, 10, 11]]
    greedy = lm.generate(prompts, max_new_tokens=6)
    assert lm.generate(prompts, max_new_tokens=6, sampler="top_k", top_k=1, seed=3) == greedy
    assert lm.generate(prompts, max_new_tokens=6, sampler="beam", num_beams=1) == greedy
    a = lm.generate(prompts, max_new_tokens=6, sampler="top_p", top_p=0.95, seed=7)
    b = lm.generate(prompts, max_new_tokens=6, sampler="top_p", top_p=0.95, seed=7)
    assert a == b and [r[:len(p)] for r, p in zip(a, prompts)] == prompts
    beams = lm.generate(prompts, max_new_tokens=6, sampler="beam", num_beams=3)
    assert [r[:len(p)] for r, p in zip(beams, prompts)] == prompts
    assert all(len(r) == len(p) + 6 for r, p in zip(beams, prompts))
    # A lone prompt beams as it does in a batch (on torch its repeated cache rows must own
    # their memory: the cache is written in place).
    assert lm.generate(prompts[:1], max_new_tokens=6, sampler="beam", num_beams=3) == beams[:1]
    # Without stop tokens a row's beams share one length, so the penalty cannot reorder
    # them; it is still part of the compiled function's key.
    functions = len(lm._generate_functions)
    assert lm.generate(prompts, max_new_tokens=6, sampler="beam", num_beams=3,
                       length_penalty=0.0) == beams
    assert len(lm._generate_functions) == functions + 1
    with pytest.raises(ValueError, match="length_penalty"):
        lm.generate(prompts, sampler="beam", length_penalty=float("inf"))
    stop = greedy[0][4]  # the second generated token of row 0
    stopped = lm.generate(prompts, max_new_tokens=6, stop_token_ids=[stop])
    for row, full, prompt in zip(stopped, greedy, prompts):
        continuation = full[len(prompt):]
        cut = continuation.index(stop) if stop in continuation else len(continuation)
        assert row == prompt + continuation[:cut]
    with pytest.raises(ValueError, match="sampler"):
        lm.generate(prompts, sampler="nucleus")
    with pytest.raises(ValueError, match="max_sequence_length"):
        lm.generate(prompts, max_new_tokens=40)


@pytest.mark.parametrize("sampler", ["greedy", "random", "top_k", "top_p", "beam"])
def test_ragged_batch_rows_decode_as_alone(lm, sampler):
    """Every row of a batch of different-length prompts gives what it gives alone (seeded
    samplers: row i of the batch with seed [s_i] equals the prompt alone with [s_i])."""
    prompts = [[40, 88], [1, 2, 3, 4, 5, 6, 7], [9, 8, 7, 6]]
    seeds = [11, 12, 13]
    kwargs = dict(max_new_tokens=6, sampler=sampler, num_beams=3, top_k=5, top_p=0.9,
                  stop_token_ids=None)
    batch = lm.generate(prompts, seed=seeds, **kwargs)
    for prompt, seed, row in zip(prompts, seeds, batch):
        assert lm.generate([prompt], seed=[seed], **kwargs) == [row], (prompt, sampler)
        assert len(row) == len(prompt) + 6


def test_prompt_lengths_share_compiled_functions(lm):
    """Prompt lengths are bucketed: a dozen lengths compile one function, not twelve."""
    lm.max_compiled_functions = 16
    lm._generate_functions.clear()
    lm.generate([[3, 4]], max_new_tokens=3)
    traces, functions = lm.generate_traces, len(lm._generate_functions)
    for length in range(2, 14):
        lm.generate([[7] * length, [5] * (length + 1)], max_new_tokens=3)
    new_functions = len(lm._generate_functions) - functions
    # The prefilled block is the longest prompt rounded up to 16: one function for all.
    assert new_functions <= 1
    if keras.backend.backend() != "torch":  # torch runs eagerly: no traces to count
        assert lm.generate_traces - traces <= new_functions + 1
    lm.max_compiled_functions = 2
    lm.generate([[1]], max_new_tokens=2)
    assert len(lm._generate_functions) <= 2


def test_generate_arguments(lm):
    # A flat id list is one prompt (not one prompt per id); so is a 1-D array.
    one = lm.generate([5, 6, 7], max_new_tokens=3)
    assert one == lm.generate([[5, 6, 7]], max_new_tokens=3)[0]
    assert lm.generate(np.asarray([5, 6, 7]), max_new_tokens=3) == one
    with pytest.raises(ValueError, match="'beam'"):
        lm.generate([[1]], sampler="nucleus")
    with pytest.raises(ValueError, match="empty"):
        lm.generate([[1], []])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.generate([[1, VOCAB]])
    with pytest.raises(ValueError, match="one seed per prompt"):
        lm.generate([[1], [2]], max_new_tokens=2, sampler="random", seed=[1])


def test_training_resumes_after_save_and_load(tmp_path):
    """A reloaded model keeps its optimizer (class, hyperparameters, state) and loss, and
    the next steps' losses equal the uninterrupted run's."""
    x = np.random.randint(0, VOCAB, (16, 8)).astype("int32")
    y = np.roll(x, -1, axis=1)
    lm = GPTCausalLM(GPTBackbone(**SMALL))
    lm.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    lm.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    lm.save(tmp_path / "lm.keras")
    restored = keras.saving.load_model(tmp_path / "lm.keras")
    assert type(restored.optimizer).__name__ == "SGD"
    assert float(restored.optimizer.momentum) == pytest.approx(0.9)
    assert int(restored.optimizer.iterations) == int(lm.optimizer.iterations) == 2
    assert type(restored.loss).__name__ == type(lm.loss).__name__
    expected = lm.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    resumed = restored.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_allclose(resumed.history["loss"], expected.history["loss"], rtol=1e-5)


def test_training_lowers_loss_and_save_load(tmp_path):
    # A learnable stream: documents counting upward; packed windows with an EOS id 0.
    documents = [list(range(1 + s, 1 + s + 20)) for s in range(0, 60, 3)]
    x, y = pack_documents(documents, sequence_length=16, end_of_text_id=0)
    assert (x[:, 1:] == y[:, :-1]).all()
    lm = GPTCausalLM(GPTBackbone(**SMALL))
    lm.compile(optimizer=keras.optimizers.Adam(5e-3))
    loss_before, perplexity_before = lm.evaluate(x, y, verbose=0)
    # One long epoch: per-epoch overhead dominates tiny models on some backends.
    lm.fit(np.tile(x, (16, 1)), np.tile(y, (16, 1)), batch_size=8, epochs=1, verbose=0)
    loss_after, perplexity_after = lm.evaluate(x, y, verbose=0)
    assert loss_after < 0.5 * loss_before
    assert perplexity_after < perplexity_before
    # The default perplexity is exp(loss); the explicit metric computes it from logits.
    np.testing.assert_allclose(perplexity_after, np.exp(loss_after), rtol=1e-5)
    restored = assert_saved_model_matches(lm, x[:2], tmp_path)
    assert restored.generate([[4, 5, 6]], max_new_tokens=3) == lm.generate([[4, 5, 6]],
                                                                           max_new_tokens=3)
    assert "perplexity" in restored.evaluate(x, y, verbose=0, return_dict=True)
    lm.compile(optimizer=keras.optimizers.Adam(5e-3), metrics=[Perplexity()])
    np.testing.assert_allclose(lm.evaluate(x, y, verbose=0)[1], perplexity_after, rtol=1e-4)


def test_pack_documents_and_batches():
    x, y = pack_documents([[5, 6, 7], [8, 9]], sequence_length=3, end_of_text_id=0)
    assert x.tolist() == [[5, 6, 7], [0, 8, 9]] and y.tolist() == [[6, 7, 0], [8, 9, 0]]
    with pytest.raises(ValueError, match="sequence_length"):
        pack_documents([[1]], sequence_length=8, end_of_text_id=0)
    batches = CausalLMBatches([list(range(1, 40))] * 4, 8, 0, batch_size=4)
    bx, by = next(iter(batches))
    assert bx.shape == by.shape == (4, 8)


def test_few_shot_evaluation(lm):
    prompt = build_prompt("2+2=", [("1+1=", "2"), ("1+2=", "3")], num_shots=1,
                          instruction="Add.")
    assert prompt == "Add.\n\n1+1= 2\n\n2+2="
    context, choices = [5, 6, 7], [[8], [9, 10]]
    raw = score_choices(lm, context, choices, normalize="none")
    logp = to_numpy(keras.ops.log_softmax(lm(np.asarray([[5, 6, 7, 9, 10]], "int32")), -1))[0]
    assert abs(raw[1] - (logp[2, 9] + logp[3, 10])) < 1e-4
    normed = score_choices(lm, context, choices, normalize="tokens")
    assert abs(normed[1] - raw[1] / 2) < 1e-5

    class Characters:  # a tokenizer stub: one id per character
        def encode(self, text):
            return [ord(c) % 64 for c in text]

    def copycat(ids):  # a "model" that predicts the token it just saw, strongly
        return keras.ops.one_hot(keras.ops.convert_to_tensor(ids), 64) * 10.0

    items = [{"context": "say aaa:", "choices": ["abc", "aaa"], "label": 1},
             {"context": "say ccc:", "choices": ["ccc", "cde"], "label": 0}]
    assert evaluate_multiple_choice(copycat, items, examples=items, num_shots=1,
                                    tokenizer=Characters()) == 1.0


def test_huggingface_gpt2_parity(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from keras_bigmodels.tokenizers import Tokenizer

    config = transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=2,
                                     n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    reference = transformers.GPT2LMHeadModel(config).eval()
    perturb_norms_and_biases(reference)  # a swapped ln_1/ln_2 or bias must show
    reference.save_pretrained(tmp_path)
    tokenizer = Tokenizer.train_bpe(["the quick brown fox jumps over the lazy dog"] * 20, 300)
    tokenizer.save(tmp_path)

    lm = GPTCausalLM.from_huggingface(tmp_path)
    ids = np.random.randint(0, 300, (2, 12)).astype("int32")
    with torch.no_grad():
        expected = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
        hf_greedy = reference.generate(torch.tensor(ids[:, :4], dtype=torch.long),
                                       max_new_tokens=8, do_sample=False,
                                       pad_token_id=0, eos_token_id=None).numpy()
    assert_close(lm(ids), expected, atol=1e-4)
    assert (lm.generate(ids[:, :4], max_new_tokens=8, stop_token_ids=None) == hf_greedy).all()
    # Ragged beam search: each row of the batch equals transformers' beam on that prompt.
    ragged = [ids[0, :2].tolist(), ids[1, :6].tolist()]
    ours = lm.generate(ragged, max_new_tokens=6, sampler="beam", num_beams=3,
                       stop_token_ids=None)
    for prompt, row in zip(ragged, ours):
        with torch.no_grad():
            hf_beam = reference.generate(torch.tensor([prompt], dtype=torch.long),
                                         max_new_tokens=6, num_beams=3, do_sample=False,
                                         early_stopping=False, pad_token_id=0,
                                         eos_token_id=None).numpy()[0].tolist()
        assert row == hf_beam
    # With a stop token, finished beams wait in a pool while others run on (transformers'
    # algorithm); the stop token is one the unstopped beams write.
    stop = ours[0][len(ragged[0]) + 1]
    stopped = lm.generate(ragged, max_new_tokens=6, sampler="beam", num_beams=3,
                          stop_token_ids=[stop])
    for prompt, row in zip(ragged, stopped):
        with torch.no_grad():
            hf_beam = reference.generate(torch.tensor([prompt], dtype=torch.long),
                                         max_new_tokens=6, num_beams=3, do_sample=False,
                                         early_stopping=False, pad_token_id=stop,
                                         eos_token_id=stop).numpy()[0].tolist()
        while len(hf_beam) > len(prompt) and hf_beam[-1] == stop and stop not in hf_beam[
                len(prompt):-1]:
            hf_beam = hf_beam[:-1]  # ours cuts the stop token and what follows
        assert row == hf_beam[:len(hf_beam)], (prompt, row, hf_beam)
    assert lm.tokenizer is not None
    text = lm.generate("the quick", max_new_tokens=3, stop_token_ids=None)
    assert isinstance(text, str) and text.startswith("the quick")


def hf_argmax_loop(reference, ids, max_new_tokens):
    # OpenAIGPT has no KV cache in transformers: the reference is a plain argmax loop.
    import torch

    ids = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_ids = reference(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_ids], dim=1)
    return ids.numpy()


def test_huggingface_openai_gpt_parity(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.numpy import load_file, save_file

    def save(path, **overrides):
        config = transformers.OpenAIGPTConfig(
            vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, **overrides)
        torch.manual_seed(0)
        reference = transformers.OpenAIGPTLMHeadModel(config).eval()
        # HF inits Conv1D with std 0.02, zero biases and identity layer norms, under which
        # exact and tanh GELU agree to 1e-6; wider random weights tell them apart.
        with torch.no_grad():
            for name, weight in reference.named_parameters():
                identity = 1.0 if "ln_" in name and name.endswith("weight") else 0.0
                weight.copy_(identity + 0.2 * torch.randn_like(weight))
        reference.save_pretrained(path)
        return reference

    ids = np.random.RandomState(0).randint(0, 300, (2, 12)).astype("int32")
    reference = save(tmp_path / "gpt")
    lm = GPTCausalLM.from_huggingface(tmp_path / "gpt")
    backbone = lm.backbone
    assert backbone.final_norm is None and backbone.normalize_first is False
    # modeling_openai.py maps afn "gelu" to gelu_new, the tanh approximation.
    assert backbone.activation == "gelu_approximate"
    with torch.no_grad():
        expected = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    assert_close(lm(ids), expected, atol=1e-4)
    assert (lm.generate(ids[:, :4], max_new_tokens=8, stop_token_ids=None)
            == hf_argmax_loop(reference, ids[:, :4], 8)).all()
    exact_gelu = GPTCausalLM.from_huggingface(tmp_path / "gpt",
                                              backbone_overrides={"activation": "gelu"})
    assert np.abs(to_numpy(exact_gelu(ids)) - expected).max() > 1e-3

    # The config's activation and epsilon are honoured.
    other = save(tmp_path / "relu", afn="relu", layer_norm_epsilon=1e-2)
    lm = GPTCausalLM.from_huggingface(tmp_path / "relu")
    assert lm.backbone.activation == "relu" and lm.backbone.layer_norm_epsilon == 1e-2
    with torch.no_grad():
        expected = other(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    assert_close(lm(ids), expected, atol=1e-4)

    # Clear errors: unknown model_type, missing and unexpected weights.
    config_file = tmp_path / "gpt" / "config.json"
    config_text = config_file.read_text()
    config_file.write_text(config_text.replace('"openai-gpt"', '"gpt_neo"'))
    with pytest.raises(ValueError, match="model_type 'gpt_neo'"):
        GPTCausalLM.from_huggingface(tmp_path / "gpt")
    config_file.write_text(config_text)
    weights_file = tmp_path / "gpt" / "model.safetensors"
    weights = load_file(weights_file)
    weights.pop(next(n for n in weights if n.endswith("h.1.ln_2.bias")))
    weights["transformer.h.0.attn.extra.weight"] = np.zeros((2,), "float32")
    save_file(weights, weights_file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"(?s)Missing.*h\.1\.ln_2\.bias.*Unexpected.*extra"):
        GPTCausalLM.from_huggingface(tmp_path / "gpt")
