"""rnnmt: RNN machine translation, from a parallel corpus to a gRPC service."""

__version__ = "0.1.0"
