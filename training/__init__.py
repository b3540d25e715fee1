"""Offline training with PyTorch: corpora, model, training loop, reference beam search, export."""
