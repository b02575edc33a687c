"""The one decoding loop (tinyllm/models/decoding.py): a toy step function with known probabilities
drives greedy, beam search and sampling to known tokens; every model family (GPT, the recurrent
baselines, the encoder-decoder) decodes through it; reordering a state's rows equals decoding the
reordered batch from scratch; beam search over a whole small vocabulary is exact; and the token-id
check gives one error, worded the same, from every entry point."""
import numpy as np
import pytest

import tinyllm as tl
from tinyllm.generate import generate
from tinyllm.models import GPT, LSTMLM, FeedForwardLM, GPTConfig, Seq2SeqConfig, Seq2SeqTransformer, TextVAE
from tinyllm.models import decoding
from tinyllm.models.decoding import decode
from tinyllm.models.seq2seq import BOS

# ---------------------------------------------------------------------------------------------
# a toy model: the next token's probabilities depend on the last token of the state's history
# ---------------------------------------------------------------------------------------------
#            next:   0      1      2      3
TABLE = np.array([[1e-6, 0.50, 0.40, 0.10],  # after 0: greedy takes 1, but 2 leads somewhere better
                  [0.34, 0.26, 0.20, 0.20],  # after 1: nothing stands out
                  [0.01, 0.01, 0.01, 0.97],  # after 2: almost surely 3
                  [0.70, 0.10, 0.10, 0.10]])  # after 3
LOGITS = np.log(TABLE).astype(np.float32)


class Toy:
    """step/reorder over a state that is the history itself (each row: the tokens that row has been
    fed). Records every reorder and the last history."""

    def __init__(self):
        self.reorders, self.steps, self.history = [], 0, None

    def step(self, ids, state):
        self.steps += 1
        self.history = ids if state is None else np.concatenate([state, ids], axis=1)
        return LOGITS[self.history[:, -1]], self.history

    def reorder(self, state, rows):
        self.reorders.append(np.array(rows))
        return state[rows]


def test_toy_greedy_beam_and_sampling_reach_known_tokens():
    toy = Toy()
    np.testing.assert_array_equal(decode(toy.step, toy.reorder, [[0]], max_new_tokens=2), [[0, 1, 0]])
    assert toy.steps == 2 and toy.reorders == []  # the prompt once, then one token per step; no reorder
    # 0->1->0 has probability 0.17, 0->2->3 has 0.388: two beams find it, greedy does not
    out = decode(toy.step, toy.reorder, [[0]], max_new_tokens=2, num_beams=2, num_return_sequences=2)
    np.testing.assert_array_equal(out, [[0, 2, 3], [0, 1, 0]])
    np.testing.assert_array_equal(decode(toy.step, toy.reorder, [[0], [2]], max_new_tokens=3, num_beams=2),
                                  [[0, 2, 3, 0], [2, 3, 0, 1]])
    # eos: the beam ends at 3 and the row is not padded further; greedy rows that end are padded
    np.testing.assert_array_equal(decode(toy.step, toy.reorder, [[0]], max_new_tokens=5, num_beams=2,
                                         eos_token_id=3), [[0, 2, 3]])
    np.testing.assert_array_equal(decode(toy.step, toy.reorder, [[2], [1]], max_new_tokens=3, eos_token_id=3,
                                         pad_token_id=0), [[2, 3, 0, 0], [1, 0, 1, 0]])
    # sampling: top_k=1 leaves one token; num_return_sequences repeats each prompt's state
    s = decode(toy.step, toy.reorder, [[0], [3]], max_new_tokens=4, do_sample=True, top_k=1,
               num_return_sequences=2, seed=0)
    np.testing.assert_array_equal(s, [[0, 1, 0, 1, 0]] * 2 + [[3, 0, 1, 0, 1]] * 2)
    np.testing.assert_array_equal(toy.reorders[-1], [0, 0, 1, 1])
    # and a free draw follows the table: after 2, token 3 almost always
    draws = decode(toy.step, toy.reorder, np.full((400, 1), 2), max_new_tokens=1, do_sample=True, seed=1)[:, 1]
    assert (draws == 3).mean() > 0.9


def test_beam_search_reorders_the_state_to_follow_the_parents():
    toy = Toy()
    decode(toy.step, toy.reorder, [[0]], max_new_tokens=3, num_beams=2)
    first = toy.reorders[0]
    np.testing.assert_array_equal(first, [0, 0])  # the prompt's state copied to both beams
    # then each step's rows are the running beams' parents: after 0 the beams are 1 and 2 (from beam 0);
    # after that 2->3 and 1->0 survive, parents (1, 0) ordered by score
    np.testing.assert_array_equal(toy.reorders[1], [0, 0])
    np.testing.assert_array_equal(toy.reorders[2], [1, 0])

    # so the state's rows are the running beams when the last step is fed: 0 2 3 and 0 1 0
    np.testing.assert_array_equal(toy.history, [[0, 2, 3], [0, 1, 0]])

    def no_reorder(state, rows):  # copies the prompt to the beams, then ignores the parents
        return state[np.arange(len(rows)) % len(state)]
    decode(toy.step, no_reorder, [[0]], max_new_tokens=3, num_beams=2)
    np.testing.assert_array_equal(toy.history, [[0, 1, 3], [0, 2, 0]])  # beams grafted onto the wrong pasts


def test_loop_errors_name_their_entry_point():
    toy = Toy()
    with pytest.raises(ValueError, match="^toy: max_new_tokens must be a positive integer, got 0$"):
        decode(toy.step, toy.reorder, [[0]], max_new_tokens=0, name="toy")
    with pytest.raises(ValueError, match="^toy: input_ids: token id 4 is outside the vocabulary \\(size 4\\)$"):
        decode(toy.step, toy.reorder, [[0, 4]], max_new_tokens=1, vocab_size=4, name="toy")
    with pytest.raises(ValueError, match="block_size is 3; ask for at most 1 new tokens"):
        decode(toy.step, toy.reorder, [[0, 1, 2]], max_new_tokens=2, max_positions=3)


# ---------------------------------------------------------------------------------------------
# the model families
# ---------------------------------------------------------------------------------------------
V = 12


def _peaky(model, scale=3.0):
    rng = np.random.default_rng(0)
    for p in model.parameters():  # livelier than the small inits, so rankings have gaps
        if p.ndim == 2:
            p.data[...] = rng.normal(0.0, scale / np.sqrt(p.shape[-1]), p.shape)
    return model


def _gpt():
    tl.manual_seed(0)
    return _peaky(GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, tie_weights=False)))


def _seq2seq():
    tl.manual_seed(0)
    cfg = Seq2SeqConfig(src_vocab_size=V, tgt_vocab_size=V, n_layer=1, n_head=2, n_embd=16, max_len=10)
    return _peaky(Seq2SeqTransformer(cfg))


FAMILIES = {
    "gpt": _gpt,
    "lstm": lambda: (tl.manual_seed(0), _peaky(LSTMLM(V, 8, 16, 2)))[1],
    "ffn": lambda: (tl.manual_seed(0), _peaky(FeedForwardLM(V, context=3, n_embd=4, hidden=16)))[1],
    "vae": lambda: (tl.manual_seed(0), _peaky(TextVAE(V, n_embd=4, hidden_size=8, latent_size=3)))[1],
    "seq2seq": _seq2seq,
}
PROMPT = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])


def _initial_state(kind, model, prompt):
    """The state the loop's first step gets, for ``prompt``'s rows."""
    if kind == "gpt":
        return model.new_caches()
    if kind == "vae":
        z = np.random.default_rng(3).standard_normal((3, 3))[:len(prompt)]
        return tl.tensor(z.astype(np.float32)), None
    if kind == "seq2seq":
        with tl.no_grad():
            memory, mask = model.encode(PROMPT)
        return memory, mask, None
    return None


def _generate(kind, model, **kw):
    if kind == "seq2seq":
        return model.translate(PROMPT, **kw)
    return model.generate(PROMPT, **kw)


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_every_model_decodes_through_the_shared_loop(kind, monkeypatch):
    model = FAMILIES[kind]().eval()
    calls = []
    for loop in ("_greedy_or_sample", "_beam_search"):
        real = getattr(decoding, loop)

        def spy(step, reorder, *args, _real=real, _name=loop):
            calls.append((_name, getattr(step, "__name__", "")))
            return _real(step, reorder, *args)
        monkeypatch.setattr(decoding, loop, spy)
    greedy = _generate(kind, model, max_new_tokens=4, seed=0)  # the VAE draws z from the seed
    beams = _generate(kind, model, max_new_tokens=4, num_beams=3, num_return_sequences=2, seed=0)
    sampled = _generate(kind, model, max_new_tokens=4, do_sample=True, top_k=1, seed=0)
    assert [c[0] for c in calls] == ["_greedy_or_sample", "_beam_search", "_greedy_or_sample"]
    assert all(name == "decode_step" for _, name in calls)  # the model's own step function
    np.testing.assert_array_equal(sampled, greedy)
    assert beams.shape[0] == 6


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_reordering_the_state_equals_decoding_the_reordered_batch(kind):
    """step on the prompt, reorder rows, step on one more token == the same from the reordered prompt."""
    model = FAMILIES[kind]().eval()
    rows = np.array([2, 0, 0, 1])
    prompt = PROMPT if kind != "seq2seq" else np.full((3, 1), BOS)
    nxt = np.array([[3], [1], [4], [1]])
    with tl.no_grad():
        _, state = model.decode_step(prompt, _initial_state(kind, model, prompt))
        state = model.reorder_state(state, rows)
        a, _ = model.decode_step(nxt, state)
        fresh = _initial_state(kind, model, prompt)
        fresh = model.reorder_state(fresh, rows) if kind in ("vae", "seq2seq") else fresh  # (z / memory rows)
        _, state = model.decode_step(prompt[rows], fresh)
        b, _ = model.decode_step(nxt, state)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_beam_search_with_a_beam_per_token_is_exact(kind):
    """V beams keep every first token, so the best two-token continuation is the exact argmax over all V^2."""
    model = FAMILIES[kind]().eval()
    prompt = PROMPT[:1]
    out = model.generate(prompt, max_new_tokens=2, num_beams=V)
    pairs = np.array([(a, b) for a in range(V) for b in range(V)])
    with tl.no_grad():
        logits, _ = model(np.concatenate([np.repeat(prompt, len(pairs), 0), pairs[:, :1]], axis=1))
    lg = logits.data[:, -2:].astype(np.float64)
    logp = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
    total = logp[np.arange(len(pairs)), 0, pairs[:, 0]] + logp[np.arange(len(pairs)), 1, pairs[:, 1]]
    np.testing.assert_array_equal(out[0, 3:], pairs[total.argmax()])
    greedy = model.generate(prompt, max_new_tokens=2)
    assert total.max() >= total[(pairs == greedy[0, 3:]).all(1)][0]


def test_gpt_sliding_window_repeats_its_state_for_num_return_sequences():
    model = _gpt()  # block_size 16: 24 new tokens slide the window 11 times
    greedy = model.generate(PROMPT[:2], max_new_tokens=24, crop_context=True)
    sampled = model.generate(PROMPT[:2], max_new_tokens=24, crop_context=True, do_sample=True, top_k=1,
                             num_return_sequences=2, seed=0)
    np.testing.assert_array_equal(sampled, np.repeat(greedy, 2, axis=0))


# ---------------------------------------------------------------------------------------------
# the token-id check: one wording from every entry point
# ---------------------------------------------------------------------------------------------
def _entry_points():
    gpt, lstm, ffn, vae, s2s = (FAMILIES[k]() for k in ("gpt", "lstm", "ffn", "vae", "seq2seq"))
    tgt = np.array([[BOS, 4]])
    return [
        ("GPT", "idx", lambda x: gpt(x)),
        ("generate", "input_ids", lambda x: generate(gpt, x, max_new_tokens=2)),
        ("generate", "input_ids", lambda x: gpt.generate(x, max_new_tokens=2)),
        ("LSTMLM", "idx", lambda x: lstm(x)),
        ("LSTMLM.generate", "input_ids", lambda x: lstm.generate(x, max_new_tokens=2)),
        ("FeedForwardLM", "idx", lambda x: ffn(x)),
        ("FeedForwardLM.generate", "input_ids", lambda x: ffn.generate(x, max_new_tokens=2)),
        ("TextVAE", "idx", lambda x: vae(x)),
        ("TextVAE.generate", "input_ids", lambda x: vae.generate(x, max_new_tokens=2)),
        ("Seq2SeqTransformer", "src", lambda x: s2s(x, tgt)),
        ("Seq2SeqTransformer", "tgt", lambda x: s2s(tgt, x)),
        ("Seq2SeqTransformer.translate", "src", lambda x: s2s.translate(x)),
    ]


@pytest.mark.parametrize("bad, problem", [
    (np.array([[1, V]]), f"token id {V} is outside the vocabulary (size {V})"),
    (np.array([[1, -1]]), f"token id -1 is outside the vocabulary (size {V})"),
])
def test_token_ids_out_of_the_vocabulary_give_one_error_everywhere(bad, problem):
    for name, what, call in _entry_points():
        with pytest.raises(ValueError) as e:
            call(bad)
        assert str(e.value) == f"{name}: {what}: {problem}", name


def test_token_ids_of_the_wrong_type_or_shape_give_one_error_everywhere():
    for name, what, call in _entry_points():
        with pytest.raises(ValueError) as e:
            call(np.array([[1.0, 2.0]]))
        assert str(e.value) == f"{name}: {what} must hold integer token ids, got dtype float64", name
        with pytest.raises(ValueError) as e:
            call(np.zeros((1, 2, 2), dtype=np.int64))
        shape = "(B, T) or (T,)" if what == "input_ids" else "(B, T)"
        assert str(e.value) == f"{name}: {what} must have shape {shape}, got (1, 2, 2)", name
        with pytest.raises(ValueError) as e:
            call(np.zeros((1, 0), dtype=np.int64))
        assert str(e.value) == f"{name}: {what} must hold at least one token per row, got shape (1, 0)", name
