"""Run configuration: frozen dataclasses, validated on construction, saved as JSON.

A checkpoint holds the whole RunConfig, so resume, sample and eval rebuild the run
from the workdir alone.
"""

import dataclasses
import os
from pathlib import Path
from typing import Any

from jaxtrain.models.transformer import DigitsFamily, TextFamily, TransformerConfig
from jaxtrain.models.vae import VAEConfig, VAEFamily

# model name -> (its config class, its family class)
MODELS = {"vae": (VAEConfig, VAEFamily), "transformer": (TransformerConfig, DigitsFamily)}
DATASETS = ("mnist", "fashion-mnist", "text")


class RunMismatch(ValueError):
    """The workdir holds a run this command cannot use (unlike a damaged checkpoint,
    an older checkpoint would not help)."""


def default_data_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str(Path(cache) / "jaxtrain")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    download: bool = True
    data_file: str | None = None  # text: the UTF-8 file
    vocab: str | None = None  # text: the file's characters, saved so sampling can decode

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}: choose one of "
                             f"{', '.join(DATASETS)}")
        if (self.dataset == "text") != (self.data_file is not None):
            raise ValueError("--data-file goes with --dataset text, and --dataset text "
                             "needs --data-file PATH")

    @property
    def is_text(self) -> bool:
        return self.dataset == "text"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = 10  # the run's length: epochs, or
    steps: int | None = None  # optimizer steps (exactly one of the two)
    eval_every: int | None = None  # steps between evaluations [default: one epoch]
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    seed: int = 0
    keep: int = 3

    def __post_init__(self):
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give the run's length as exactly one of --epochs and --steps")
        for name in ("epochs", "steps", "eval_every", "batch_size", "keep"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a positive integer, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip <= 0:
            raise ValueError(f"--grad-clip must be positive, got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: str
    model_config: Any
    data: DataConfig
    train: TrainConfig

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.data.is_text and self.model != "transformer":
            raise ValueError(f"--dataset text needs --model transformer, not {self.model}")
        if self.data.is_text and self.train.epochs is not None:
            raise ValueError("text runs are measured in steps: pass --steps N, not --epochs")

    def family(self):
        if self.data.is_text:
            return TextFamily(self.model_config, self.data.vocab)
        return MODELS[self.model][1](self.model_config)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        model = d.get("model")
        if model not in MODELS:
            raise RunMismatch(f"the run's config names model {model!r}, which this jaxtrain "
                             f"does not know (known: {', '.join(MODELS)})")
        return cls(model=model, model_config=MODELS[model][0](**d["model_config"]),
                   data=DataConfig(**d["data"]), train=TrainConfig(**d["train"]))
