"""Text generation from any tinyllm model: ``generate(model, ids, ...)`` is ``model.generate(ids, ...)``,
with Hugging Face ``generate``'s options (greedy, sampling, beam search; see ``tinyllm.models.decoding``).

    out = generate(model, ids, max_new_tokens=50, num_beams=4, eos_token_id=0)   # (B, T_out) int64
"""
from .models.decoding import decode, no_repeat_ngram, temperature_warp, top_k_filter, top_p_filter  # noqa: F401


def generate(model, input_ids, **kwargs):
    """Continue ``input_ids`` (B, T) or (T,) with ``model``; returns int64 (B * num_return_sequences, T_out),
    prompt included. Every model decodes through the one loop, ``tinyllm.models.decoding.decode``."""
    return model.generate(input_ids, **kwargs)
