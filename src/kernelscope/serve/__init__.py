"""The interactive explorer: a local web page to play with the operation and browse runs.

``kernelscope serve [RUN ...]`` starts it; :func:`create_app` builds the FastAPI app
(for tests, scripts, or another ASGI server). Importing this package imports FastAPI
but never torch (runs import it lazily when a view needs a model).
"""

from kernelscope.serve.app import create_app

__all__ = ["create_app"]
