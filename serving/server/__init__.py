"""`rnnmt serve`: the gRPC server, an adapter around the inference core (batching and scheduling,
models, interceptors, metrics, settings)."""
