"""Inference without torch: model packages, the onnxruntime beam-search engine, the gRPC server."""
