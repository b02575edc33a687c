"""``tinyllm serve``: an OpenAI-compatible completions server (FastAPI + uvicorn, the ``serve`` extra)
with a batching decode engine. ``engine.py`` needs only NumPy; ``app.py`` needs the extra."""


def create_app(model, tokenizer, run_name, **limits):
    """The FastAPI app (see ``app.create_app``); an ImportError names the extra when it is missing."""
    try:
        from .app import create_app as create
    except ImportError as e:
        raise ImportError(f"serving needs FastAPI and uvicorn ({e}); pip install 'tinyllm[serve]'") from None
    return create(model, tokenizer, run_name, **limits)
