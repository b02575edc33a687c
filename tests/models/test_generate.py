"""tinyllm.generate against Hugging Face ``GPT2LMHeadModel.generate``: token for token for greedy,
no-repeat-n-gram and beam search; the sampling warpers against HF's warper classes; plus sampling
reproducibility, cache-vs-recompute, and argument errors.

The golden model is a small random GPT-2 with peaky logits (large embeddings, an untied lm_head, a
scaled-up body) so that argmax and beam rankings have comfortable gaps: our logits agree with HF's to
~1e-6, and a gap of 1e-3 is then never flipped.
"""
import numpy as np
import pytest

import tinyllm as tl
from tinyllm.generate import generate, no_repeat_ngram, temperature_warp, top_k_filter, top_p_filter
from tinyllm.models.decoding import _sample_rows
from tinyllm.models.gpt import GPT, GPTConfig

V = 64  # vocab of the golden model
PROMPTS = np.random.default_rng(0).integers(0, V, (2, 5))


# ---------------------------------------------------------------------------------------------
# the golden pair: an HF GPT-2 and the same weights in tinyllm
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                  tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # peaky, context-dependent logits (see the module docstring)
        for name, p in hf.named_parameters():
            if name.startswith("transformer.h.") and p.dim() == 2:
                p.mul_(3.0)
        hf.transformer.wte.weight.normal_(0.0, 1.0)
        hf.transformer.wpe.weight.normal_(0.0, 1.0)
        hf.lm_head.weight.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(path)
    ours = GPT.from_pretrained(str(path))
    yield hf, ours
    torch.set_num_threads(threads)


def hf_generate(hf, prompts, **kw):
    import torch
    # one thread: fastest for this model, and far less noisy on a busy machine. Set on every call
    # because numba's OpenMP pool resets the process's OpenMP thread count when it starts.
    torch.set_num_threads(1)
    ids = torch.tensor(np.atleast_2d(prompts))
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kw)
    return out.numpy()


def assert_same(hf, ours, prompts=PROMPTS, **kw):
    """Same tokens as HF, and the same number of forward passes (so we also stop when HF stops)."""
    calls = {"hf": 0, "ours": 0}

    def count_hf(*_):
        calls["hf"] += 1

    def count_ours(*args, **kwargs):
        calls["ours"] += 1
        return type(ours).forward(ours, *args, **kwargs)

    hook = hf.register_forward_hook(count_hf)
    try:
        want = hf_generate(hf, prompts, **kw)
    finally:
        hook.remove()
    ours.forward = count_ours  # an instance attribute shadows the method
    try:
        got = generate(ours, prompts, **kw)
    finally:
        del ours.forward
    assert got.dtype == np.int64
    assert got.shape == want.shape, f"{kw}: shape {got.shape} != HF {want.shape}\n{got}\n{want}"
    np.testing.assert_array_equal(got, want, err_msg=str(kw))
    assert calls["ours"] == calls["hf"], f"{kw}: {calls}"
    return got


@pytest.fixture(scope="module")
def greedy(pair):
    """Our greedy continuation of PROMPTS, to pick eos ids that really get generated."""
    return generate(pair[1], PROMPTS, max_new_tokens=20)


@pytest.fixture(scope="module")
def eos_ids(greedy):
    # tokens the greedy paths emit a few steps in: with them some beams finish early, others not
    return int(greedy[0, 8]), int(greedy[1, 10])


# ---------------------------------------------------------------------------------------------
# greedy
# ---------------------------------------------------------------------------------------------
def test_greedy_matches_hf(pair):
    hf, ours = pair
    out = assert_same(hf, ours, max_new_tokens=30, pad_token_id=0)
    assert len(set(out[0, 5:].tolist())) > 5  # the golden model does not just repeat one token
    assert_same(hf, ours, PROMPTS[:1], max_length=12, pad_token_id=0)


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
def test_greedy_default_length_and_input_forms(pair):
    hf, ours = pair
    out = assert_same(hf, ours, pad_token_id=0)  # neither length given: 20 new tokens (HF 5.x default)
    assert out.shape == (2, 25)
    one = generate(ours, PROMPTS[0], max_new_tokens=6)  # 1-D prompt -> batch of one, still 2-D
    two = ours.generate(tl.tensor(PROMPTS, dtype=np.int64), max_new_tokens=6)  # Tensor input, model method
    assert one.shape == (1, 11)
    np.testing.assert_array_equal(one[0], two[0])
    long_prompt = np.random.default_rng(1).integers(0, V, (1, 50))
    assert_same(hf, ours, long_prompt, pad_token_id=0)  # default capped at n_positions = 64


@pytest.mark.parametrize("pad", [1, 0, None])
def test_greedy_eos_pads_finished_rows_like_hf(pair, eos_ids, pad):
    hf, ours = pair
    out = assert_same(hf, ours, max_new_tokens=20, eos_token_id=eos_ids[0], pad_token_id=pad)
    assert (out[:, 5:] == eos_ids[0]).any()  # eos really is generated
    assert_same(hf, ours, max_new_tokens=20, eos_token_id=list(eos_ids), pad_token_id=pad)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_greedy_no_repeat_ngram_matches_hf(pair, eos_ids, n):
    hf, ours = pair
    plain = generate(ours, PROMPTS, max_new_tokens=25)
    out = assert_same(hf, ours, max_new_tokens=25, no_repeat_ngram_size=n, pad_token_id=0)
    if n == 2:
        assert not np.array_equal(out, plain)  # the ban really changed something
    for row in out:  # and no n-gram repeats
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        assert len(grams) == len(set(grams))
    assert_same(hf, ours, max_new_tokens=25, no_repeat_ngram_size=n, eos_token_id=eos_ids[1], pad_token_id=2)


# ---------------------------------------------------------------------------------------------
# beam search
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_beams", [2, 3, 4])
@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("with_eos", [False, True])
def test_beam_search_matches_hf(pair, eos_ids, num_beams, length_penalty, early_stopping, with_eos):
    hf, ours = pair
    eos = eos_ids[(num_beams + int(length_penalty)) % 2] if with_eos else None
    assert_same(hf, ours, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=14,
                length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=eos, pad_token_id=1)


@pytest.mark.parametrize("num_return_sequences", [1, 2, 3, 4])
def test_beam_search_num_return_sequences(pair, eos_ids, num_return_sequences):
    hf, ours = pair
    kw = dict(num_beams=4, max_new_tokens=14, eos_token_id=eos_ids[0], pad_token_id=1)
    out = assert_same(hf, ours, num_return_sequences=num_return_sequences, **kw)
    assert out.shape[0] == 2 * num_return_sequences
    assert_same(hf, ours, PROMPTS[1:], num_return_sequences=num_return_sequences, early_stopping=True, **kw)


def test_beam_search_finishes_hypotheses_early(pair, eos_ids):
    """The eos cases above are only meaningful if some hypotheses end before others."""
    hf, ours = pair
    out = assert_same(hf, ours, num_beams=3, num_return_sequences=3, max_new_tokens=14,
                      eos_token_id=eos_ids[0], pad_token_id=1)
    ended = [(row[5:] == eos_ids[0]).any() for row in out]
    assert any(ended) and not all(ended), out


@pytest.mark.parametrize("kw", [
    dict(no_repeat_ngram_size=2),
    dict(no_repeat_ngram_size=3, length_penalty=0.0, early_stopping="never"),
    dict(length_penalty=-1.0),
    dict(pad_token_id=0),  # HF fills with eos when the pad id is 0 (`pad or eos`): kept
    dict(pad_token_id=None),
    dict(eos_list=True, early_stopping=True),
    # with these two eos ids more than num_beams of the top 2 * num_beams candidates end in eos at some
    # step, so HF's K = (1 + n_eos) * num_beams (not 2 * num_beams) candidates are needed to match
    dict(eos_pair=True),
    dict(max_length=9),  # a 4-token continuation
])
def test_beam_search_variants_match_hf(pair, greedy, eos_ids, kw):
    hf, ours = pair
    kw = dict(kw)
    base = dict(num_beams=3, num_return_sequences=3, max_new_tokens=14, eos_token_id=eos_ids[0], pad_token_id=1)
    if kw.pop("eos_list", False):
        base["eos_token_id"] = list(eos_ids)
    if kw.pop("eos_pair", False):
        base["eos_token_id"] = [int(greedy[1, 5]), int(greedy[0, 11])]
    if "max_length" in kw:
        del base["max_new_tokens"]
    base.update(kw)
    assert_same(hf, ours, **base)


# ---------------------------------------------------------------------------------------------
# the warpers and the n-gram processor against HF's classes
# ---------------------------------------------------------------------------------------------
def _random_scores(seed, n=6, v=97):
    rng = np.random.default_rng(seed)
    scores = (rng.standard_normal((n, v)) * rng.uniform(0.3, 6.0, (n, 1))).astype(np.float32)
    scores[0, :5] = scores[0, 5]  # ties at the top-k cut
    scores[1, 3] = -np.inf  # an already banned token
    return scores


@pytest.mark.parametrize("seed", range(5))
def test_warpers_match_hf(seed):
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    scores = _random_scores(seed)
    t = torch.tensor(scores)
    ids = torch.zeros((scores.shape[0], 1), dtype=torch.long)
    for temp in (0.3, 1.0, 1.7):
        np.testing.assert_allclose(temperature_warp(scores, temp), lp.TemperatureLogitsWarper(temp)(ids, t).numpy(),
                                   rtol=1e-6)
    for k, keep in [(1, 1), (3, 1), (5, 1), (6, 1), (40, 1), (97, 1), (500, 1), (1, 2), (2, 3)]:
        want = lp.TopKLogitsWarper(k, min_tokens_to_keep=keep)(ids, t).numpy()
        np.testing.assert_array_equal(top_k_filter(scores, k, keep), want, err_msg=f"top_k={k}")
    for p, keep in [(0.01, 1), (0.1, 1), (0.5, 1), (0.9, 1), (0.95, 1), (0.999, 1), (0.3, 2), (0.6, 5)]:
        want = lp.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, t).numpy()
        np.testing.assert_array_equal(top_p_filter(scores, p, keep), want, err_msg=f"top_p={p}")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_matches_hf(n):
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(n)
    for L in (1, 2, 3, 7, 30):
        ids = rng.integers(0, 6, (4, L))  # a tiny alphabet, so n-grams repeat a lot
        scores = rng.standard_normal((4, 10)).astype(np.float32)
        want = lp.NoRepeatNGramLogitsProcessor(n)(torch.tensor(ids), torch.tensor(scores)).numpy()
        np.testing.assert_array_equal(no_repeat_ngram(ids, scores, n), want, err_msg=f"n={n} L={L}")


# ---------------------------------------------------------------------------------------------
# without the oracle: sampling, cache vs recompute, eval mode, errors
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """A tinyllm GPT with peaky logits (weights scaled up), no HF needed."""
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32, tie_weights=False))
    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():  # the same recipe as the HF golden model
        if name.startswith("h.") and p.ndim == 2:
            p.data *= 3.0
    for p, std in ((model.wte.weight, 1.0), (model.wpe.weight, 1.0), (model.lm_head.weight, 0.5)):
        p.data[...] = rng.normal(0.0, std, p.shape)
    return model


def test_sampling_reproducible_with_seed(small):
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    kw = dict(do_sample=True, max_new_tokens=20, temperature=1.5)
    a = generate(small, prompt, seed=7, **kw)
    np.testing.assert_array_equal(a, generate(small, prompt, seed=7, **kw))
    assert not np.array_equal(a, generate(small, prompt, seed=8, **kw))
    tl.manual_seed(3)  # seed=None draws from tinyllm's global generator
    b = generate(small, prompt, **kw)
    tl.manual_seed(3)
    np.testing.assert_array_equal(b, generate(small, prompt, **kw))
    c = generate(small, prompt, seed=7, num_return_sequences=3, top_k=10, top_p=0.9, **kw)
    assert c.shape == (6, 23)
    np.testing.assert_array_equal(c[:3, :3], np.repeat(prompt[:1], 3, axis=0))  # HF's repeat_interleave order


def test_top_k_1_sampling_is_greedy(small):
    prompt = np.array([[1, 2, 3], [7, 8, 9]])
    greedy = generate(small, prompt, max_new_tokens=20)
    for seed in range(3):
        np.testing.assert_array_equal(generate(small, prompt, max_new_tokens=20, do_sample=True, top_k=1, seed=seed),
                                      greedy)
    tiny_p = generate(small, prompt, max_new_tokens=20, do_sample=True, top_p=1e-6, seed=0)
    np.testing.assert_array_equal(tiny_p, greedy)


def test_sample_rows_follows_the_distribution():
    p = np.array([[0.0, 0.1, 0.2, 0.0, 0.3, 0.4]] * 20000)
    draws = _sample_rows(p, np.random.default_rng(0))
    freq = np.bincount(draws, minlength=6) / len(draws)
    assert freq[0] == 0 and freq[3] == 0  # zero-probability tokens are never drawn
    np.testing.assert_allclose(freq, p[0], atol=0.015)


def test_beam_sampling_runs_and_is_reproducible(small):
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    kw = dict(do_sample=True, num_beams=3, num_return_sequences=2, max_new_tokens=10, eos_token_id=0, top_k=20)
    a = generate(small, prompt, seed=1, **kw)
    np.testing.assert_array_equal(a, generate(small, prompt, seed=1, **kw))
    assert a.shape[0] == 4 and a.shape[1] <= 13


def test_kv_cache_equals_full_recompute(small):
    prompt = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    out = generate(small, prompt, max_new_tokens=25)
    ids = prompt.copy()
    with tl.no_grad():
        for _ in range(25):
            logits, _ = small(ids)  # no cache: the whole sequence every step
            ids = np.concatenate([ids, logits.data[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, ids)
    assert len(set(out[0, 5:].tolist())) > 3


def test_cache_in_chunks_equals_one_full_forward(small):
    """The KV cache path of GPT.forward: chunks of several tokens (masked) and single tokens (unmasked)."""
    ids = np.random.default_rng(5).integers(0, 50, (2, 12))
    with tl.no_grad():
        full, _ = small(ids)
        caches = small.new_caches()
        parts = [small(ids[:, a:b], caches=caches)[0].data for a, b in ((0, 5), (5, 8), (8, 9), (9, 10), (10, 12))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full.data, rtol=1e-4, atol=1e-4)
    assert caches[0].k.shape == (2, 2, 12, 16) and len(caches[0]) == 12


def test_generation_runs_in_eval_mode_and_restores_it():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.5))
    model.train()
    a = generate(model, [[1, 2, 3]], max_new_tokens=8)
    b = generate(model, [[1, 2, 3]], max_new_tokens=8)
    np.testing.assert_array_equal(a, b)  # no dropout while generating
    assert all(m.training for m in model.modules())
    assert tl.is_grad_enabled()  # grad mode back on


def test_block_size_limits(small):
    prompt = np.zeros((1, 30), dtype=np.int64)  # block_size 32
    assert generate(small, prompt, max_new_tokens=3).shape == (1, 33)  # the last token is never fed back
    with pytest.raises(ValueError, match="block_size"):
        generate(small, prompt, max_new_tokens=4)
    with pytest.raises(ValueError, match="block_size"):
        generate(small, np.zeros((1, 40), dtype=np.int64), max_new_tokens=1)
    assert generate(small, prompt).shape == (1, 32)  # default: 20 new tokens, capped at block_size


def test_crop_context_slides_the_window_like_nanogpt(small):
    """Past block_size (32), each token is predicted from the last 32 tokens, as nanoGPT's sample.py does."""
    prompt = np.random.default_rng(1).integers(0, 50, (2, 40))  # already longer than block_size
    out = generate(small, prompt, max_new_tokens=30, crop_context=True)
    ids = prompt.copy()
    with tl.no_grad():
        for _ in range(30):
            logits, _ = small(ids[:, -32:])
            ids = np.concatenate([ids, logits.data[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, ids)
    short = np.array([[1, 2, 3]])  # inside block_size the cache path is used and agrees with the default
    np.testing.assert_array_equal(generate(small, short, max_new_tokens=29, crop_context=True),
                                  generate(small, short, max_new_tokens=29))
    s = generate(small, short, max_new_tokens=60, do_sample=True, seed=3, crop_context=True)
    np.testing.assert_array_equal(s, generate(small, short, max_new_tokens=60, do_sample=True, seed=3, crop_context=True))
    assert s.shape == (1, 63)
    with pytest.raises(ValueError, match="beam"):
        generate(small, short, max_new_tokens=60, num_beams=2, crop_context=True)


@pytest.mark.parametrize("kw, match", [
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(num_beams=0), "num_beams"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(do_sample=True, top_k=-1), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_length=3), "max_length"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(eos_token_id=1.5), "eos_token_id"),
])
def test_bad_arguments_raise(small, kw, match):
    with pytest.raises(ValueError, match=match):
        generate(small, np.array([[1, 2, 3]]), **kw)


def test_bad_input_ids_raise(small):
    with pytest.raises(ValueError, match="integer"):
        generate(small, np.array([[1.0, 2.0]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="shape"):
        generate(small, np.zeros((1, 2, 3), dtype=np.int64), max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one"):
        generate(small, np.zeros((1, 0), dtype=np.int64), max_new_tokens=2)
