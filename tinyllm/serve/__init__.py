"""Serving a model over HTTP: an OpenAI-compatible server and its playground page."""
