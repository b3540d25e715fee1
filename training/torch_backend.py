"""The PyTorch model behind the beam-search backend interface: the reference decoder of `rnnmt evaluate`."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnmt.serving.core.beam_search import Arrays
from rnnmt.tokenizers.sentencepiece import EOS_ID
from rnnmt.training.model import DecoderState, Seq2Seq


def rows_first(state: DecoderState) -> Arrays:
    """Decoder state with h, c as [R,L,D] (the model keeps them [L,R,D]), so every tensor has rows first."""
    return (state[0].transpose(0, 1), state[1].transpose(0, 1), *state[2:])


def layers_first(state: Arrays) -> DecoderState:
    """Inverse of :func:`rows_first`."""
    return (state[0].transpose(0, 1).contiguous(), state[1].transpose(0, 1).contiguous(), *state[2:])


def scored_topk(
    logits: Tensor, beam_scores: Tensor, eos_bias: Tensor, k: int | Tensor
) -> tuple[Tensor, Tensor]:
    """logits [R,V], beam_scores [R], eos_bias [R], k (scalar) → top-k of beam score + log-prob, with the
    EOS bias added to EOS's log-prob: scores [R,k], ids [R,k].
    The decoder graph of a model package ends in exactly this."""
    log_probs = torch.log_softmax(logits, dim=-1)
    eos = log_probs[:, EOS_ID : EOS_ID + 1] + eos_bias.unsqueeze(1)
    log_probs = torch.cat([log_probs[:, :EOS_ID], eos, log_probs[:, EOS_ID + 1 :]], dim=1)
    # A 0-d tensor k works (the export traces it as a graph input, so k stays dynamic); the stub says int.
    return torch.topk(log_probs + beam_scores.unsqueeze(1), k, dim=-1)  # type: ignore[arg-type]


class TorchBackend:
    """Runs :class:`Seq2Seq` in inference mode on the device its parameters are on (state and memory stay
    there; scores and ids come back as numpy). Memory is ``(states, keys, mask)``; state is the decoder's."""

    def __init__(self, model: Seq2Seq) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(self.device)

    @torch.inference_mode()
    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[Arrays, Arrays]:
        states, keys, mask, state = self.model.encode(self._tensor(src), self._tensor(lengths))
        return (states, keys, mask), rows_first(state)

    def take(self, arrays: Arrays, rows: np.ndarray) -> Arrays:
        index = self._tensor(rows)
        return tuple(a.index_select(0, index) for a in arrays)

    @torch.inference_mode()
    def step(
        self,
        prev: np.ndarray,
        state: Arrays,
        memory: Arrays,
        beam_scores: np.ndarray,
        eos_bias: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, Arrays]:
        states, keys, mask = memory
        logits, new_state = self.model.step(self._tensor(prev), layers_first(state), keys, states, mask)
        scores, ids = scored_topk(logits, self._tensor(beam_scores), self._tensor(eos_bias), k)
        return scores.cpu().numpy(), ids.cpu().numpy(), rows_first(new_state)
