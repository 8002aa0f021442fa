"""`tfpredict serve`: TF Serving's REST and gRPC APIs, with dynamic batching and hot reload."""

from .server import ServeOptions, serve

__all__ = ["ServeOptions", "serve"]
