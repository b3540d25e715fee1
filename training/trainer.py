"""The training loop: `rnnmt train CONFIG`.

Tokenizers are trained on a sample of the training split on first use, which is then tokenized once into a
memory-mapped corpus store (:mod:`rnnmt.training.store`); batches by tokens with length bucketing;
Adam with a learning-rate schedule, label smoothing and gradient clipping; greedy validation on dev
with sacreBLEU every N steps, the best k checkpoints kept, early stopping, a wall-clock budget, and
checkpoint averaging at the end. ``latest.pt`` lets an interrupted run resume exactly where it stopped
(model, optimizer, schedule, RNG and data position). Under ``torchrun`` it trains data-parallel (NCCL
on CUDA, gloo on the CPU); ``train.device`` says where (:mod:`rnnmt.training.device`).

Run folder: ``tokenizer/``, ``checkpoints/step-N.pt`` (best k), ``best.pt``, ``latest.pt``,
``averaged.pt``, ``metrics.jsonl``, ``corpus/`` (stores, unless ``data.cache_dir`` says elsewhere). A run started with ``resume=False`` (``rnnmt train --restart``)
replaces all of them: new tokenizers, checkpoints and metrics.

Progress lines (model size, dev scores) are logged at INFO on the ``rnnmt.training.trainer`` logger; see
:func:`console_log` for where they go.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from rnnmt.errors import RnnmtError
from rnnmt.progress import Progress
from rnnmt.scoring import score
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.translator import Translator
from rnnmt.tokenizers.sentencepiece import PAD_ID, Tokenizer, train_sentencepiece
from rnnmt.training.allocator import settle
from rnnmt.training.batching import Batches, collate, make_batches
from rnnmt.training.checkpoint import average_weights, load_checkpoint, save_checkpoint
from rnnmt.training.config import RunConfig
from rnnmt.training.corpus import Pair, read_lines_of, read_split, split_paths
from rnnmt.training.device import placement, select_device
from rnnmt.training.model import Seq2Seq, count_parameters
from rnnmt.training.schedule import LearningRate
from rnnmt.training.store import CorpusStore, open_store
from rnnmt.training.torch_backend import TorchBackend

VALIDATION_ROWS = 512
RUN_FILES = ("tokenizer", "checkpoints", "best.pt", "latest.pt", "averaged.pt", "metrics.jsonl", "corpus")
"""What training writes into a run folder; a restarted run removes them first."""

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    best_bleu: float
    steps: int
    parameters: int
    tokens_per_second: float
    minutes: float


@dataclass
class Progression:
    """Where training stands; saved in ``latest.pt`` so a resumed run continues identically."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch already trained (per rank)
    elapsed: float = 0.0  # seconds trained before this process started
    target_tokens: int = 0
    best: list[list[Any]] = field(default_factory=list)  # [dev BLEU, step] of kept checkpoints, best first
    stopped: bool = False


def _distributed(backend: str) -> tuple[int, int]:
    """(rank, world size), initialising ``backend`` when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train_files(config: RunConfig) -> tuple[Path, Path]:
    """The source and target files of ``data.train`` (missing ones are an error naming the option)."""
    d = config.data
    src, tgt, _ = split_paths(config.path(d.train), d.src_lang, d.tgt_lang)
    for path in (src, tgt):
        if not path.is_file():
            raise RnnmtError(f"data.train: file not found: {path}")
    return src, tgt


def prepare_tokenizers(config: RunConfig, rank: int, world: int) -> tuple[Tokenizer, Tokenizer]:
    """Load the run's tokenizers, training them first if the run has none, each on a seeded random
    sample of at most ``tokenizer.max_sentences`` lines of its side(s) of the training split."""
    tok_dir = config.path(config.run_dir) / "tokenizer"
    t, d = config.tokenizer, config.data
    names = ("joint", "joint") if t.joint else (d.src_lang, d.tgt_lang)
    paths = [tok_dir / f"{name}.model" for name in names]
    if rank == 0 and not all(p.exists() for p in paths):
        src, tgt = train_files(config)
        corpora = [[src, tgt]] if t.joint else [[src], [tgt]]
        for path, files in zip(dict.fromkeys(paths), corpora, strict=True):
            train_sentencepiece(
                read_lines_of(files),
                path,
                t.vocab_size,
                t.model_type,
                t.character_coverage,
                t.max_sentences,
                config.train.seed,
            )
    if world > 1:
        dist.barrier()
    return Tokenizer.load(paths[0]), Tokenizer.load(paths[1])


def prepare_store(
    config: RunConfig, src_tok: Tokenizer, tgt_tok: Tokenizer, rank: int, world: int
) -> CorpusStore:
    """The training split's corpus store, built by rank 0 if it is not in the cache yet."""
    d = config.data
    cache = config.path(d.cache_dir) if d.cache_dir else config.path(config.run_dir) / "corpus"
    src, tgt = train_files(config)

    def opened(build: bool) -> CorpusStore:
        try:
            return open_store(cache, src, tgt, src_tok, tgt_tok, d.max_train_tokens, build)
        except RnnmtError as exc:
            raise RnnmtError(f"data.train: {exc}") from exc

    store = opened(True) if rank == 0 else None
    if world > 1:
        dist.barrier()
    return store or opened(False)


def read_data(config: RunConfig, split: str) -> list[Pair]:
    """The pairs of the config's ``data.<split>`` (``train`` or ``dev``); a missing or malformed file is
    an :class:`RnnmtError` naming the option and the file."""
    d = config.data
    try:
        return read_split(config.path(getattr(d, split)), d.src_lang, d.tgt_lang)
    except RnnmtError as exc:
        raise RnnmtError(f"data.{split}: {exc}") from exc


class Trainer:
    def __init__(self, config: RunConfig, resume: bool = True) -> None:
        self.config = config
        tc = config.train
        self.place = placement(select_device(tc.device), tc.precision)
        self.device = self.place.device
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.rank, self.world = _distributed(self.place.backend)
        self.allocator = settle()
        if tc.threads:
            torch.set_num_threads(tc.threads)
        elif self.world > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world))
        random.seed(tc.seed)
        torch.manual_seed(tc.seed)
        d = config.data
        # Check the data before creating the run folder, so missing data leaves nothing behind.
        train_files(config)
        self.dev = read_data(config, "dev")
        self.run_dir = config.path(config.run_dir)
        if not resume and self.rank == 0:
            clear_run(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if tc.dev_max_sentences:
            self.dev = self.dev[: tc.dev_max_sentences]
        self.src_tok, self.tgt_tok = prepare_tokenizers(config, self.rank, self.world)
        self.store = prepare_store(config, self.src_tok, self.tgt_tok, self.rank, self.world)
        if not len(self.store):
            raise RnnmtError(f"no training pairs left in {d.train} after tokenizing")
        self.model = Seq2Seq(self.src_tok.vocab_size, self.tgt_tok.vocab_size, config.model).to(self.device)
        devices = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.model, device_ids=devices) if self.world > 1 else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.learning_rate)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.place.scaled)
        self.schedule = LearningRate(tc)
        self.progression = Progression()
        self.metrics_path = self.run_dir / "metrics.jsonl"
        latest = self.run_dir / "latest.pt"
        if resume and latest.exists():
            self._restore(load_checkpoint(latest))

    # -- checkpoints -----------------------------------------------------------------------------------

    def _meta(self, dev_scores: dict[str, Any]) -> dict[str, Any]:
        d = self.config.data
        self.progression.elapsed = self._seconds()
        return {
            "step": self.progression.step,
            "epoch": self.progression.epoch,
            "src_lang": d.src_lang,
            "tgt_lang": d.tgt_lang,
            "train_data": d.train,
            "train_pairs": len(self.store),
            "train_minutes": round(self.progression.elapsed / 60, 2),
            **dev_scores,
        }

    def _rng_states(self) -> list[Any]:
        cuda = [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else []
        state = [torch.get_rng_state(), random.getstate(), *cuda]
        if self.world == 1:
            return [state]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, state)
        return gathered

    def _save(self, path: Path, meta: dict[str, Any], training: bool) -> None:
        state = None
        if training:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(),
                "progression": vars(self.progression),
                "rng": self._rng_states(),
            }
        if self.rank == 0:
            save_checkpoint(path, self.model, self.config, self.src_tok, self.tgt_tok, meta, state)

    def _restore(self, payload: dict[str, Any]) -> None:
        state = payload.get("training_state")
        if state is None:
            raise RnnmtError("latest.pt holds no training state; start a new run folder instead")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progression = Progression(**state["progression"])
        torch_rng, py_rng, *cuda_rng = state["rng"][self.rank % len(state["rng"])]
        torch.set_rng_state(torch_rng)
        random.setstate(py_rng)
        if cuda_rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng[0], self.device)

    def _record(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl``."""
        if self.rank == 0:
            with self.metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # -- validation ------------------------------------------------------------------------------------

    def validate(self) -> dict[str, Any]:
        """Greedy decoding of dev, scored with sacreBLEU."""
        translator = Translator(
            TorchBackend(self.model), self.src_tok, self.tgt_tok, max_batch_rows=VALIDATION_ROWS
        )
        options = SearchOptions(beam_size=1, max_output_tokens=self.config.data.max_train_tokens + 50)
        hyps = translator.translate([p.src for p in self.dev], options)
        self.model.train()
        scores = score([h[0].text for h in hyps], [p.tgt for p in self.dev])
        return {
            "dev_bleu": round(scores.bleu, 2),
            "dev_chrf": round(scores.chrf, 2),
            "bleu_signature": scores.bleu_signature,
            "chrf_signature": scores.chrf_signature,
        }

    def _after_validation(self, scores: dict[str, Any]) -> None:
        """Keep the best k checkpoints and ``best.pt``; save ``latest.pt``; step the schedule."""
        p, k = self.progression, self.config.train.keep_best
        self.schedule.validated(scores["dev_bleu"])
        meta = self._meta(scores)
        ckpt_dir = self.run_dir / "checkpoints"
        p.best = sorted([*p.best, [scores["dev_bleu"], p.step]], key=lambda b: -b[0])
        if [scores["dev_bleu"], p.step] in p.best[:k]:
            self._save(ckpt_dir / f"step-{p.step}.pt", meta, training=False)
            if p.best[0][1] == p.step and self.rank == 0:
                shutil.copyfile(ckpt_dir / f"step-{p.step}.pt", self.run_dir / "best.pt")
        for _, step in p.best[k:]:
            if self.rank == 0:
                (ckpt_dir / f"step-{step}.pt").unlink(missing_ok=True)
        p.best = p.best[:k]
        patience = self.config.train.early_stopping
        p.stopped = p.stopped or bool(patience and self.schedule.stale >= patience)
        self._save(self.run_dir / "latest.pt", meta, training=True)

    # -- the loop --------------------------------------------------------------------------------------

    def _seconds(self) -> float:
        """Training seconds so far, including earlier runs of a resumed training."""
        return self._elapsed_before + time.monotonic() - self._started

    def _out_of_budget(self) -> bool:
        tc, p = self.config.train, self.progression
        return bool(
            (tc.max_steps and p.step >= tc.max_steps)
            or (tc.max_epochs and p.epoch >= tc.max_epochs)
            or (tc.max_minutes and self._seconds() >= tc.max_minutes * 60)
        )

    def _agree(self, flag: bool) -> bool:
        """All ranks stop together: any rank's flag stops everyone."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def plan(self, epoch: int) -> Batches:
        """The batches of ``epoch`` (the same on every rank; each trains its :meth:`Batches.shard`)."""
        s, tc = self.store, self.config.train
        return make_batches(s.src_lengths, s.tgt_lengths, tc.batch_tokens, tc.seed, epoch, self.world)

    def train_step(self, batch: np.ndarray, done: float = 0.0) -> tuple[float, int]:
        """One optimizer step on the examples at ``batch`` [n]; returns the batch's mean (smoothed) loss
        per target token and its tokens.

        ``done`` is the share of the run's budget spent before this step (for the ``cosine`` schedule)."""
        tc, place = self.config.train, self.place
        src, lengths, tgt_in, tgt_out = collate(self.store.examples(batch), tc.pad_to)
        tokens = int((tgt_out != PAD_ID).sum())
        if self.device.type == "cuda":
            src, lengths, tgt_in, tgt_out = (
                t.pin_memory().to(self.device, non_blocking=True) for t in (src, lengths, tgt_in, tgt_out)
            )
        with torch.autocast(self.device.type, dtype=place.autocast, enabled=place.autocast is not None):
            logits = (self.ddp or self.model)(src, lengths, tgt_in)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)),
                tgt_out.reshape(-1),
                ignore_index=PAD_ID,
                label_smoothing=tc.label_smoothing,
                reduction="sum",
            )
        self.scaler.scale(loss / tokens).backward()
        if tc.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_grad_norm)
        self.progression.step += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.rate(self.progression.step, done)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()) / tokens, tokens

    def _fraction_done(self, batches_per_epoch: int) -> float | None:
        """How much of the run is done by its nearest limit (steps, epochs or minutes), if it has one."""
        tc, p = self.config.train, self.progression
        fractions = [p.step / tc.max_steps] if tc.max_steps else []
        if tc.max_epochs:
            fractions.append((p.epoch + p.batch_in_epoch / batches_per_epoch) / tc.max_epochs)
        if tc.max_minutes:
            fractions.append(self._seconds() / (tc.max_minutes * 60))
        return max(fractions) if fractions else None

    def _done(self, batches_per_epoch: int) -> float:
        """The share of the budget spent, the same on every rank (the learning rate depends on it)."""
        done = self._fraction_done(batches_per_epoch) or 0.0
        if self.world == 1:
            return done
        t = torch.tensor([done], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def train(self) -> TrainResult:
        tc, p = self.config.train, self.progression
        self._started, self._elapsed_before = time.monotonic(), p.elapsed
        tokens_before = p.target_tokens
        params = count_parameters(self.model)
        if self.rank == 0:
            logger.info(
                "model: %s parameters; %s training pairs; %d process(es) on %s; allocator %s",
                f"{params:,}",
                f"{len(self.store):,}",
                self.world,
                self.device,
                self.allocator,
            )
        self.model.train()
        progress = Progress(0, "steps")
        window = (time.monotonic(), 0, 0.0, 0)  # start, tokens, loss sum, batches
        validated_at = p.step if p.best else -1
        stop = p.stopped or self._out_of_budget()
        while not stop:
            batches = self.plan(p.epoch)
            mine = batches.shard(self.rank, self.world)
            for b in mine[p.batch_in_epoch :]:
                loss, tokens = self.train_step(batches[b], self._done(len(mine)))
                p.batch_in_epoch += 1
                p.target_tokens += tokens * self.world
                window = (window[0], window[1] + tokens * self.world, window[2] + loss, window[3] + 1)
                if p.step % tc.log_every == 0:
                    self._report(window, len(mine), progress)
                    window = (time.monotonic(), 0, 0.0, 0)
                stop = self._agree(self._out_of_budget())
                if stop or p.step % tc.validate_every == 0:
                    self._validate_and_save()
                    validated_at = p.step
                    stop = self._agree(stop or p.stopped)
                if stop:
                    break
            else:
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                stop = self._agree(self._out_of_budget())
        if validated_at != p.step:
            self._validate_and_save()
        progress.close()
        trained = max(time.monotonic() - self._started, 1e-9)
        best_bleu = self._average_best()
        return TrainResult(
            self.run_dir,
            self.run_dir / "best.pt",
            best_bleu,
            p.step,
            params,
            (p.target_tokens - tokens_before) / trained,
            self._seconds() / 60,
        )

    def _report(
        self, window: tuple[float, int, float, int], batches_per_epoch: int, progress: Progress
    ) -> None:
        p = self.progression
        start, tokens, loss_sum, batches = window
        rate = tokens / max(time.monotonic() - start, 1e-9)
        fraction = self._fraction_done(batches_per_epoch)
        loss, lr = loss_sum / max(batches, 1), self.schedule.rate(p.step, fraction or 0.0)
        self._record(
            {
                "step": p.step,
                "epoch": round(p.epoch + p.batch_in_epoch / batches_per_epoch, 3),
                "loss": round(loss, 4),
                "lr": lr,
                "tokens_per_s": round(rate),
                "minutes": round(self._seconds() / 60, 2),
            }
        )
        if self.rank == 0:
            fields = {"loss": f"{loss:.3f}", "tok/s": f"{rate:,.0f}", "lr": f"{lr:.1e}"}
            progress.update(p.step, fraction, force=True, **fields)

    def _validate_and_save(self) -> None:
        scores = self.validate() if self.rank == 0 else {}
        if self.world > 1:
            box = [scores]
            dist.broadcast_object_list(box, src=0)
            scores = box[0]
        self._record({"step": self.progression.step, "minutes": round(self._seconds() / 60, 2), **scores})
        if self.rank == 0:
            logger.info(
                "step %d: dev BLEU %.2f, chrF %.2f",
                self.progression.step,
                scores["dev_bleu"],
                scores["dev_chrf"],
            )
        self._after_validation(scores)

    def _average_best(self) -> float:
        """Average the kept checkpoints into ``averaged.pt``; it becomes ``best.pt`` if it scores higher.

        Returns the dev BLEU of ``best.pt``."""
        p = self.progression
        best_bleu = float(p.best[0][0])
        if len(p.best) < 2 or self.rank != 0:
            return best_bleu
        paths = [self.run_dir / "checkpoints" / f"step-{step}.pt" for _, step in p.best]
        self.model.load_state_dict(average_weights(paths))
        scores = self.validate()
        meta = {**self._meta(scores), "averaged_steps": [step for _, step in p.best]}
        averaged = self.run_dir / "averaged.pt"
        self._save(averaged, meta, training=False)
        self._record({"step": p.step, "averaged": True, **scores})
        logger.info(
            "averaged %d checkpoints: dev BLEU %.2f, chrF %.2f",
            len(paths),
            scores["dev_bleu"],
            scores["dev_chrf"],
        )
        if scores["dev_bleu"] > best_bleu:
            shutil.copyfile(averaged, self.run_dir / "best.pt")
            best_bleu = scores["dev_bleu"]
        return best_bleu


def clear_run(run_dir: Path) -> None:
    """Remove what an earlier training left in ``run_dir`` (:data:`RUN_FILES`); other files stay."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def console_log(stream: TextIO | None = None) -> Iterator[None]:
    """Meanwhile, show the training log (INFO and up, bare messages) on ``stream`` (default stdout), as
    `rnnmt train` shows its progress lines, unless logging is configured (a handler on the
    ``rnnmt.training`` logger or above, e.g. the root logger's): then the records go there only.

    On a terminal each line first clears the line, so it replaces a progress bar drawn there instead of
    being appended to it.
    """
    target = logging.getLogger("rnnmt.training")
    if target.hasHandlers():
        yield
        return
    stream = stream or sys.stdout
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(("\r\x1b[K" if stream.isatty() else "") + "%(message)s"))
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


def train(config: RunConfig, resume: bool = True) -> TrainResult:
    """Train the run of ``config``: resume it from its ``latest.pt`` if it has one and ``resume``, else
    start it over (:func:`clear_run`). Progress lines are logged as :func:`console_log` says."""
    with console_log():
        trainer = Trainer(config, resume=resume)
        try:
            result = trainer.train()
            if trainer.world > 1:
                # Rank 0 may still be averaging checkpoints: tearing gloo down on one rank while another
                # still holds its connections aborted a process now and then ("terminate called ...").
                dist.barrier()
            return result
        finally:
            if trainer.world > 1:
                dist.destroy_process_group()
