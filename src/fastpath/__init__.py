"""fastpath: a data-plane proxy for AI-inference gRPC traffic."""

__version__ = "0.1.0"
