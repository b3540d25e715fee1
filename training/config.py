"""The YAML run configuration: data, tokenizer, model and training settings, validated into dataclasses.

Relative paths in a config are resolved against the config file's folder, so a config and its data can
move together. ``configs/bible-es-en.yaml`` documents every option.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rnnmt.errors import RnnmtError

ATTENTIONS = ("bahdanau", "general", "dot")
SCHEDULERS = ("plateau", "inverse_sqrt", "constant", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class DataConfig:
    train: str = "data/train"  # prefix: <train>.<src_lang> and <train>.<tgt_lang>
    dev: str = "data/dev"
    test: str = ""  # not read by training: the run's test split, for the record
    src_lang: str = "es"
    tgt_lang: str = "en"
    max_train_tokens: int = 100  # training pairs longer than this (in pieces, either side) are skipped
    cache_dir: str = ""  # corpus stores (token ids of train, by content); "" = <run_dir>/corpus


@dataclass
class TokenizerConfig:
    vocab_size: int = 8000
    model_type: str = "unigram"  # unigram | bpe
    joint: bool = True  # one vocabulary for both languages
    character_coverage: float = 1.0
    max_sentences: int = 300_000  # SentencePiece learns from a seeded random sample of this many lines


@dataclass
class ModelConfig:
    emb_size: int = 256
    encoder_hidden: int = 256  # per direction
    encoder_layers: int = 1
    decoder_hidden: int = 512
    decoder_layers: int = 1
    attention: str = "bahdanau"  # bahdanau | general | dot
    attention_size: int = 256  # hidden size of the bahdanau MLP
    input_feeding: bool = False
    dropout: float = 0.2
    tie_embeddings: bool = True  # output projection shares the target embeddings


@dataclass
class TrainConfig:
    seed: int = 1
    batch_tokens: int = 4000  # padded source+target pieces per batch (rows × the longest row's both sides)
    max_steps: int = 0  # 0 = no limit
    max_epochs: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    learning_rate: float = 0.002
    scheduler: str = "plateau"  # plateau | inverse_sqrt | constant | cosine (over the budget)
    warmup_steps: int = 0
    decrease_factor: float = 0.5  # plateau: multiply the rate by this ...
    patience: int = 2  # ... after this many validations without a better dev BLEU
    min_learning_rate: float = 1e-5
    label_smoothing: float = 0.1
    clip_grad_norm: float = 1.0
    validate_every: int = 500  # steps
    dev_max_sentences: int = 0  # 0 = the whole dev set
    keep_best: int = 3
    early_stopping: int = 0  # stop after this many validations without improvement; 0 = never
    log_every: int = 50
    threads: int = 0  # torch intra-op threads; 0 = all cores
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of the forward pass and loss (fp16: CUDA only)
    pad_to: int = 1  # batch lengths rounded up to a multiple of this
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N


@dataclass
class RunConfig:
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    base_dir: Path = Path(".")

    def path(self, value: str) -> Path:
        """A config path resolved against the config file's folder."""
        return (self.base_dir / value).resolve()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("base_dir")
        return out


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RnnmtError(f"unknown option(s) in {where}: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise RnnmtError(f"{where}.{name} must be a mapping")
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, (type(default), int) if isinstance(default, float) else type(default)
        ):
            raise RnnmtError(f"{where}.{name} must be {type(default).__name__}, not {value!r}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def validate(config: RunConfig) -> RunConfig:
    m, t = config.model, config.train
    if m.attention not in ATTENTIONS:
        raise RnnmtError(f"model.attention must be one of {ATTENTIONS}, not {m.attention!r}")
    if m.attention == "dot" and m.decoder_hidden != 2 * m.encoder_hidden:
        raise RnnmtError("model.attention 'dot' needs decoder_hidden == 2 * encoder_hidden")
    if t.precision not in PRECISIONS:
        raise RnnmtError(f"train.precision must be one of {PRECISIONS}, not {t.precision!r}")
    if t.device != "auto" and t.device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", t.device):
        raise RnnmtError(f"train.device must be auto, cpu, cuda or cuda:N, not {t.device!r}")
    if t.pad_to < 1:
        raise RnnmtError("train.pad_to must be at least 1")
    if config.tokenizer.max_sentences <= 100:
        raise RnnmtError("tokenizer.max_sentences must be over 100 (SentencePiece samples no fewer)")
    if t.scheduler not in SCHEDULERS:
        raise RnnmtError(f"train.scheduler must be one of {SCHEDULERS}, not {t.scheduler!r}")
    if t.max_steps <= 0 and t.max_epochs <= 0 and t.max_minutes <= 0:
        raise RnnmtError("set at least one of train.max_steps, train.max_epochs, train.max_minutes")
    return config


def config_from_dict(values: dict[str, Any], base_dir: Path = Path(".")) -> RunConfig:
    config = _build(RunConfig, values, "config")
    config.base_dir = base_dir
    return validate(config)


def load_config(path: Path) -> RunConfig:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise RnnmtError(f"config not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise RnnmtError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise RnnmtError(f"{path} must hold a mapping of options")
    return config_from_dict(values, path.resolve().parent)
