"""The translation model: biGRU encoder, attention, LSTM decoder (with or without input feeding).

Shapes: B batch rows, S source length, T target length, E embedding size, H encoder hidden per
direction, D decoder hidden, L decoder layers, A attentional vector size (= E), V target vocab.

:meth:`Seq2Seq.step` is the one-token decoder step that beam search calls and that export turns into the
ONNX decoder graph; :meth:`Seq2Seq.forward` is the teacher-forced training pass. Without input feeding
the training pass runs the LSTM over the whole target at once and attends for all positions in one
batched matmul, which is several times faster on a CPU than stepping token by token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnmt.tokenizers.sentencepiece import PAD_ID
from rnnmt.training.config import ModelConfig

DecoderState = tuple[Tensor, ...]
"""``(h [L,B,D], c [L,B,D])``, plus ``feed [B,A]`` (the previous attentional vector) with input feeding."""


class Encoder(nn.Module):
    """Embeddings and a packed bidirectional GRU: padding never reaches the recurrent state."""

    def __init__(self, vocab_size: int, config: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.emb_size, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = nn.GRU(
            config.emb_size,
            config.encoder_hidden,
            num_layers=config.encoder_layers,
            dropout=config.dropout if config.encoder_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=True,
        )

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """src [B,S] ids, lengths [B] → states [B,S,2H] (zeros at padding), final [B,2H] (last layer)."""
        packed = pack_padded_sequence(
            self.dropout(self.embed(src)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.rnn(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        return states, torch.cat([final[-2], final[-1]], dim=-1)


class Attention(nn.Module):
    """Scores queries against precomputed keys of the encoder states, masking source padding.

    ``bahdanau``: v·tanh(Wk·h_s + Wq·q); ``general``: q·(W·h_s); ``dot``: q·h_s.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.kind = config.attention
        enc_size = 2 * config.encoder_hidden
        if self.kind == "bahdanau":
            self.key_layer = nn.Linear(enc_size, config.attention_size, bias=False)
            self.query_layer = nn.Linear(config.decoder_hidden, config.attention_size, bias=False)
            self.energy_layer = nn.Linear(config.attention_size, 1, bias=False)
        elif self.kind == "general":
            self.key_layer = nn.Linear(enc_size, config.decoder_hidden, bias=False)
        self.keys_src_axis = 1 if self.kind == "bahdanau" else 2  # the axis of S in keys

    def keys(self, states: Tensor) -> Tensor:
        """states [B,S,2H] → keys, computed once per source: [B,S,K] for bahdanau, else [B,K,S].

        Transposed here, so that a step's scores are a plain batched MatMul: for a transposed operand
        onnxruntime picks its kernel by the source length, and a sentence's scores changed in the last
        bit between a batch (padded to a longer S) and alone."""
        if self.kind == "bahdanau":
            return self.key_layer(states)
        return (states if self.kind == "dot" else self.key_layer(states)).transpose(1, 2)

    def forward(self, query: Tensor, keys: Tensor, states: Tensor, mask: Tensor) -> Tensor:
        """query [B,T,D], keys (see :meth:`keys`), states [B,S,2H], mask [B,S] (True = real token) →
        context [B,T,2H]."""
        if self.kind == "bahdanau":
            energies = torch.tanh(self.query_layer(query).unsqueeze(2) + keys.unsqueeze(1))
            scores = self.energy_layer(energies).squeeze(-1)
        else:
            scores = torch.bmm(query, keys)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return torch.bmm(torch.softmax(scores, dim=-1), states)


class Decoder(nn.Module):
    """LSTM decoder with attention; optional input feeding of the previous attentional vector."""

    def __init__(self, vocab_size: int, config: ModelConfig) -> None:
        super().__init__()
        self.input_feeding = config.input_feeding
        self.layers = config.decoder_layers
        self.hidden = config.decoder_hidden
        enc_size = 2 * config.encoder_hidden
        self.embed = nn.Embedding(vocab_size, config.emb_size, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(config.dropout)
        self.bridge = nn.Linear(enc_size, 2 * self.layers * self.hidden)
        rnn_input = config.emb_size * (2 if self.input_feeding else 1)
        self.rnn = nn.LSTM(
            rnn_input,
            self.hidden,
            num_layers=self.layers,
            dropout=config.dropout if self.layers > 1 else 0.0,
            batch_first=True,
        )
        self.attention = Attention(config)
        self.combine = nn.Linear(self.hidden + enc_size, config.emb_size)
        self.output = nn.Linear(config.emb_size, vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.embed.weight

    def initial_state(self, final: Tensor) -> DecoderState:
        """final [B,2H] encoder summary → the decoder's first state."""
        batch = final.size(0)
        hc = torch.tanh(self.bridge(final)).view(batch, 2, self.layers, self.hidden).permute(1, 2, 0, 3)
        h, c = hc[0].contiguous(), hc[1].contiguous()
        if self.input_feeding:
            return h, c, final.new_zeros(batch, self.combine.out_features)
        return h, c

    def attend(self, rnn_out: Tensor, keys: Tensor, states: Tensor, mask: Tensor) -> Tensor:
        """rnn_out [B,T,D] → attentional vectors [B,T,A]."""
        context = self.attention(rnn_out, keys, states, mask)
        return torch.tanh(self.combine(torch.cat([rnn_out, context], dim=-1)))

    def logits(self, attentional: Tensor) -> Tensor:
        """[..., A] → [..., V]."""
        return self.output(self.dropout(attentional))

    def step(
        self, prev: Tensor, state: DecoderState, keys: Tensor, states: Tensor, mask: Tensor
    ) -> tuple[Tensor, DecoderState]:
        """One token: prev [B] ids → logits [B,V] and the next state."""
        attentional, new_state = self.attentional_step(prev, state, keys, states, mask)
        return self.logits(attentional), new_state

    def attentional_step(
        self, prev: Tensor, state: DecoderState, keys: Tensor, states: Tensor, mask: Tensor
    ) -> tuple[Tensor, DecoderState]:
        """One token: prev [B] ids → the attentional vector [B,A] (before the output layer), next state."""
        emb = self.dropout(self.embed(prev)).unsqueeze(1)
        if self.input_feeding:
            h, c, feed = state
            emb = torch.cat([emb, feed.unsqueeze(1)], dim=-1)
        else:
            h, c = state
        rnn_out, (h, c) = self.rnn(emb, (h, c))
        attentional = self.attend(rnn_out, keys, states, mask).squeeze(1)
        new_state = (h, c, attentional) if self.input_feeding else (h, c)
        return attentional, new_state

    def forward(
        self, tgt_in: Tensor, state: DecoderState, keys: Tensor, states: Tensor, mask: Tensor
    ) -> Tensor:
        """Teacher forcing: tgt_in [B,T] (bos + target) → logits [B,T,V]."""
        if self.input_feeding:
            steps = []
            for t in range(tgt_in.size(1)):
                step_logits, state = self.step(tgt_in[:, t], state, keys, states, mask)
                steps.append(step_logits)
            return torch.stack(steps, dim=1)
        rnn_out, _ = self.rnn(self.dropout(self.embed(tgt_in)), state)
        return self.logits(self.attend(rnn_out, keys, states, mask))


class Seq2Seq(nn.Module):
    """Encoder, bridge and attentional decoder. Vocab sizes are the tokenizers' piece counts."""

    def __init__(self, src_vocab: int, tgt_vocab: int, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(src_vocab, config)
        self.decoder = Decoder(tgt_vocab, config)

    def encode(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, DecoderState]:
        """src [B,S], lengths [B] → states [B,S,2H], keys ([B,S,K] or [B,K,S]: :meth:`Attention.keys`),
        mask [B,S] (bool), initial state."""
        states, final = self.encoder(src, lengths)
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < lengths.unsqueeze(1)
        return states, self.decoder.attention.keys(states), mask, self.decoder.initial_state(final)

    def forward(self, src: Tensor, lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """src [B,S], lengths [B], tgt_in [B,T] → logits [B,T,V]."""
        states, keys, mask, state = self.encode(src, lengths)
        return self.decoder(tgt_in, state, keys, states, mask)

    def step(
        self, prev: Tensor, state: DecoderState, keys: Tensor, states: Tensor, mask: Tensor
    ) -> tuple[Tensor, DecoderState]:
        """prev [B] → logits [B,V], next state (see :meth:`Decoder.step`)."""
        return self.decoder.step(prev, state, keys, states, mask)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
