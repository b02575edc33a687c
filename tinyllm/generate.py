"""Text generation from any tinyllm model: ``generate(model, ids, ...)`` is ``model.generate(ids, ...)``,
with Hugging Face ``generate``'s options (greedy, sampling, beam search; see ``tinyllm.models.decoding``).

    out = generate(model, ids, max_new_tokens=50, num_beams=4, eos_token_id=0)   # (B, T_out) int64
"""
from .models.decoding import decode, no_repeat_ngram, temperature_warp, top_k_filter, top_p_filter  # noqa: F401


def generate(model, input_ids, max_new_tokens=None, *, max_length=None, do_sample=False, temperature=1.0,
             top_k=None, top_p=None, num_beams=1, no_repeat_ngram_size=0, num_return_sequences=1,
             eos_token_id=None, pad_token_id=None, length_penalty=1.0, early_stopping=False, seed=None,
             streamer=None, **model_options):
    """Continue ``input_ids`` (B, T) or (T,) with ``model``; returns int64 (B * num_return_sequences, T_out),
    prompt included. Every model decodes through the one loop, ``tinyllm.models.decoding.decode``;
    ``model_options`` are a model's own (GPT's ``crop_context``)."""
    return model.generate(input_ids, max_new_tokens, max_length=max_length, do_sample=do_sample,
                          temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams,
                          no_repeat_ngram_size=no_repeat_ngram_size, num_return_sequences=num_return_sequences,
                          eos_token_id=eos_token_id, pad_token_id=pad_token_id, length_penalty=length_penalty,
                          early_stopping=early_stopping, seed=seed, streamer=streamer, **model_options)
