"""Where a training step's time goes: each part of the model timed forward and forward + backward on the
inputs it gets from real batches, beside the whole step (forward, loss, backward, clipping, Adam).

    .venv/bin/python benchmarks/train_profile.py configs/bible-es-en.yaml --steps 20 \\
        --set train.precision=bf16

Parts: the encoder (embeddings + packed bidirectional GRU), the decoder LSTM over the target, the
attention, the combination into attentional vectors (Linear + tanh), the output projection with the
loss, and Adam's update. Each part runs on the very tensors the model gave it in a real training step
(captured by forward hooks), ``--steps`` batches each, with a random gradient for its output. Run it
alone, under ``../shared/tools/quiet``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from recipe import overridden, recipe

from rnnmt.tokenizers.sentencepiece import PAD_ID
from rnnmt.training.batching import collate
from rnnmt.training.trainer import Trainer


def capture(trainer: Trainer, batch: np.ndarray) -> dict[str, Any]:
    """The inputs of each part in one forward pass of ``batch`` (hooks on the model's modules)."""
    model, seen = trainer.model, {}
    decoder = model.decoder

    def keep(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            seen[name] = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)

        return hook

    hooks = [
        model.encoder.register_forward_pre_hook(keep("encoder")),
        decoder.rnn.register_forward_pre_hook(keep("decoder LSTM")),
        decoder.attention.register_forward_pre_hook(keep("attention")),
        decoder.combine.register_forward_pre_hook(keep("combine")),
        decoder.output.register_forward_pre_hook(keep("output + loss")),
    ]
    src, lengths, tgt_in, tgt_out = collate(trainer.store.examples(batch))
    with torch.no_grad():
        model(src, lengths, tgt_in)
    for hook in hooks:
        hook.remove()
    seen["output + loss"] += (tgt_out,)
    return seen


def part_runs(trainer: Trainer) -> dict[str, Callable[[tuple[Any, ...]], torch.Tensor]]:
    """Part name → a function of its captured inputs returning a tensor to backpropagate from."""
    model, label_smoothing = trainer.model, trainer.config.train.label_smoothing
    decoder = model.decoder

    def output_loss(args: tuple[Any, ...]) -> torch.Tensor:
        attentional, tgt_out = args
        logits = decoder.output(attentional)
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            tgt_out.reshape(-1),
            ignore_index=PAD_ID,
            label_smoothing=label_smoothing,
            reduction="sum",
        )

    return {
        "encoder": lambda a: model.encoder(*a)[0],
        "decoder LSTM": lambda a: decoder.rnn(a[0].requires_grad_(), a[1])[0],
        "attention": lambda a: decoder.attention(a[0].requires_grad_(), a[1].requires_grad_(), *a[2:]),
        "combine": lambda a: torch.tanh(decoder.combine(a[0].requires_grad_())),
        "output + loss": lambda a: output_loss((a[0].requires_grad_(), a[1])),
    }


def forward_backward(run: Callable[[tuple[Any, ...]], torch.Tensor], inputs: tuple[Any, ...]) -> None:
    out = run(inputs)
    out.backward(torch.randn_like(out))


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="config overrides")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    overridden(args.config, args.set)  # fail early on a bad override
    with recipe(args.config, args.set) as config:
        trainer = Trainer(config)
        bf16 = config.train.precision == "bf16"
        plan = trainer.plan(0)
        batches = [plan[b] for b in range(min(len(plan), args.steps + 2))]
        trainer.model.train()
        for batch in batches[:2]:  # warm-up
            trainer.train_step(batch)
        step_seconds = sum(timed(lambda b=b: trainer.train_step(b)) for b in batches[2:])
        forward: dict[str, float] = {}
        both: dict[str, float] = {}
        runs = part_runs(trainer)
        for batch in batches[2:]:
            inputs = capture(trainer, batch)
            for name, run in runs.items():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    with torch.no_grad():
                        forward[name] = forward.get(name, 0.0) + timed(partial(run, inputs[name]))
                    both[name] = both.get(name, 0.0) + timed(partial(forward_backward, run, inputs[name]))
            trainer.model.zero_grad(set_to_none=True)
        for p in trainer.model.parameters():
            p.grad = torch.zeros_like(p)
        adam = sum(timed(trainer.optimizer.step) for _ in batches[2:])
        trainer.model.zero_grad(set_to_none=True)

    n = len(batches) - 2
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {config.train.precision}, {n} steps"
    )
    print(f"{'part':<16}{'forward ms':>12}{'fwd+bwd ms':>12}{'share':>8}")
    for name in runs:
        share = both[name] / step_seconds
        print(f"{name:<16}{forward[name] / n * 1e3:>12.1f}{both[name] / n * 1e3:>12.1f}{share:>8.0%}")
    print(f"{'Adam':<16}{'':>12}{adam / n * 1e3:>12.1f}{adam / step_seconds:>8.0%}")
    accounted = sum(both.values()) + adam
    print(f"{'whole step':<16}{'':>12}{step_seconds / n * 1e3:>12.1f}{1:>8.0%}")
    print(
        f"{'(the rest)':<16}{'':>12}{(step_seconds - accounted) / n * 1e3:>12.1f}{1 - accounted / step_seconds:>8.0%}"
    )


if __name__ == "__main__":
    main()
