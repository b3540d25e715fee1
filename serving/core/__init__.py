"""The inference core, without torch: model packages, the translator, decoding options, the beam search
and its onnxruntime backend. The server, the batch jobs and training all translate through it."""
