"""SentencePiece tokenizers shared by training, evaluation and serving (no torch)."""
