"""Run configuration: frozen dataclasses, validated on construction, saved as JSON with
every checkpoint (and as TOML beside it, see training/settings/files.py).

Each default lives in one field (`setting(default, help, bounds)`); the few training
defaults that differ between model families are in training/settings/defaults.py. The command line
and the config files are built from these fields. A checkpoint holds the whole
RunConfig, so resume, sample and eval rebuild the run from the workdir alone.
"""

import dataclasses
from typing import Any

from jaxtrain.models.configs import saved_fields
from jaxtrain.models.fields import SettingError, setting, validate
from jaxtrain.models.registry import models
from jaxtrain.training.host.paths import default_data_dir
from jaxtrain.training.settings.optimizer import OptimizerConfig
from jaxtrain.training.sources.folder import DEFAULT_SIZE
from jaxtrain.training.sources.registry import datasets
from jaxtrain.training.sources.text import EVAL_WINDOWS

DATASETS = tuple(datasets())  # training/sources/registry.py: each dataset's module registers it

# --model -> its config class; each model registers itself (models/registry.py).
MODELS = {name: model.config for name, model in models().items()}
DEFAULT_MODEL = "vae"
FINAL_EVALS = ("iw", "samples")  # see TrainConfig.final_eval
PRECISION_NAMES = ("float32", "bf16")
WANDB_MODES = ("offline", "online")  # see TrainConfig.wandb_mode
BYTES = 256  # a byte-level BPE's first tokens: the bytes (training/sources/tokenizer.py)
DEFAULT_BPE_VOCAB = 2048  # models/family.py:PRECISIONS gives their dtypes

class RunMismatch(ValueError):
    """The workdir holds a run this command cannot use (an older checkpoint won't help)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = setting("mnist", "Training data: " + "; ".join(
        f"{name}: {d.help}" for name, d in datasets().items()) + ".", choices=DATASETS)
    data_dir: str = setting(help="Folder holding MNIST/raw/ or FashionMNIST/raw/ IDX files; "
                            "folder: the images' folder.", factory=default_data_dir)
    download: bool = setting(True, "Download the data if it is missing.")
    data_file: str | None = setting(
        None, "text: a UTF-8 file or a folder of .txt files; the last 10% of each file "
        "validates, the rest trains.")
    val_file: str | None = setting(
        None, "text: validate on this file or folder of .txt files instead (all of "
        "--data-file then trains).")
    tokenizer: str = setting(
        "char", "text: char (a token a character), bpe (a byte-level BPE trained on the "
        "training text, --vocab-size tokens) or a Hugging Face tokenizers .json file.")
    vocab_size: int | None = setting(
        None, "text, --tokenizer bpe: the BPE's tokens (its first 256 are the bytes).",
        gt=BYTES, shown=str(DEFAULT_BPE_VOCAB))
    test_fraction: float = setting(
        0.1, "folder, digits: share of each class held out for testing (fixed, seeded), "
        "unless the folder has train/ and test/ subfolders.", gt=0, lt=1)
    image_size: int | None = setting(
        None, "folder: the images' side S: each is resized (its shorter side to S) and its "
        "centre S x S kept; grey folders stay grey, colour ones RGB.", gt=1,
        shown=str(DEFAULT_SIZE))
    eval_windows: int = setting(
        EVAL_WINDOWS, "text: validation windows each evaluation reads, evenly spaced over the "
        "validation tokens (fewer if the text is short).", gt=0)
    vocab: str | None = setting(None, cli=False)  # text, char: the corpus's characters
    tokenizer_json: str | None = setting(None, cli=False)  # text, bpe or a file: its JSON
    class_names: tuple[str, ...] | None = setting(None, cli=False)  # folder: subfolder names

    def __post_init__(self):
        if isinstance(self.class_names, list):  # from JSON
            object.__setattr__(self, "class_names", tuple(self.class_names))
        validate(self)
        if self.is_text != (self.data_file is not None):
            raise SettingError("data_file", "goes with --dataset text, and --dataset text "
                                            "needs --data-file PATH")
        for name, default in (("val_file", None), ("vocab_size", None), ("tokenizer", "char"),
                              ("eval_windows", EVAL_WINDOWS)):
            if getattr(self, name) != default and not self.is_text:
                raise SettingError(name, "applies to text runs (--dataset text)")
        if self.vocab_size is not None and self.tokenizer != "bpe":
            raise SettingError("vocab_size", "sizes a BPE: it goes with --tokenizer bpe")
        if self.image_size is not None and self.dataset != "folder":
            raise SettingError("image_size", f"applies to --dataset folder; {self.dataset}'s "
                               "images have their own size")

    @property
    def is_text(self) -> bool:
        return datasets()[self.dataset].task == "text"

    def text_tokenizer(self):
        """A text run's tokenizer (training/sources/tokenizer.py), from its saved form."""
        from jaxtrain.training.sources.tokenizer import tokenizer_of

        return tokenizer_of(self.vocab, self.tokenizer_json, self.tokenizer)

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The classes' names: as the run saved them, else the dataset's; None for text."""
        spec = datasets()[self.dataset].spec
        return self.class_names or (spec.classes if spec else None)


@dataclasses.dataclass(frozen=True)
class TrainConfig(OptimizerConfig):
    """The [train] section: the optimizer's settings (lr, warmup_steps, weight_decay,
    weight_decay_mask, grad_clip: training/settings/optimizer.py), then the run's."""

    epochs: int | None = setting(
        10, "Epochs in the run; the LR schedule spans the run.", gt=0)
    steps: int | None = setting(
        None, "Optimizer steps in the run, instead of --epochs.", gt=0)
    eval_every: int | None = setting(
        None, "Steps between evaluations and checkpoints.", gt=0, shown="one epoch")
    batch_size: int = setting(128, "Examples per step and per eval batch.", gt=0)
    accumulate: int = setting(
        1, "Split each step's batch into this many micro-batches whose gradients are "
        "averaged (a device holds one micro-batch's activations at a time).", gt=0)
    steps_per_call: int = setting(
        1, "Optimizer steps per call of the compiled program (a lax.scan): fewer "
        "dispatches for small models; 0: fit picks calls of about 20 ms (at most 32 "
        "steps) and saves the choice.", ge=0)
    ema_decay: float = setting(0.998, "Decay of the parameter EMA used for eval and sampling.",
                               ge=0, lt=1)
    precision: str = setting(
        "float32", "Precision of the matmuls and activations; bf16 is for GPUs (a CPU "
        "without AVX-512 BF16 emulates it) and keeps parameters, optimizer state and losses "
        "in float32.", choices=PRECISION_NAMES)
    seed: int = setting(0, "Seed of initialisation, data order and sampling.")
    keep: int = setting(3, "Latest checkpoints to keep (the best one is kept too).", gt=0)
    patience: int = setting(
        0, "Stop after this many evaluations without a better test loss (0: never).", ge=0)
    log_every: int = setting(
        50, "Steps between host reads of the training metrics (progress, TensorBoard, the "
        "NaN check).", gt=0)
    init_from: str | None = setting(
        None, "Fine-tune: start from the parameters and EMA of the run in this workdir "
        "(same architecture); the optimizer, step and schedule start fresh.")
    init_step: str | None = setting(
        None, "With --init-from: the checkpoint to start from, a step or best [default: "
        "the latest]; the run records the step it used.")
    final_eval: tuple[str, ...] | None = setting(
        None, "Measures added to the run's last evaluation, comma-separated: iw=K (VAE: the "
        "importance-weighted test NLL with K samples, e.g. iw=1000), samples=N (image "
        "models: class accuracy and Frechet distance of N samples per class, scored by "
        "the dataset's judge, e.g. samples=100).")
    freeze: tuple[str, ...] | None = setting(
        None, "Keep the matching parameters fixed, comma-separated patterns matched on "
        "parameter paths (encoder, decoder, embed, Block_0, Block_[0-1]; `fit "
        "--list-params` shows them).")
    wandb: bool = setting(
        False, "Log the run to Weights & Biases too, into <workdir>/wandb/: the scalars, "
        "image grids, text samples and config TensorBoard gets (the optional extra: pip "
        "install -e '.[wandb]').")
    wandb_project: str = setting("jaxtrain", "W&B: the project of the run.")
    wandb_name: str | None = setting(None, "W&B: the run's name.", shown="the workdir's name")
    wandb_group: str | None = setting(None, "W&B: the group of the run (e.g. a sweep's).")
    wandb_tags: tuple[str, ...] | None = setting(None, "W&B: the run's tags, comma-separated.")
    wandb_mode: str = setting(
        "offline", "W&B: offline (written under <workdir>/wandb/ only, no network; upload "
        "later with `wandb sync <workdir>/wandb/offline-run-*`) or online (needs `wandb "
        "login`).", choices=WANDB_MODES)

    def __post_init__(self):
        if (self.epochs is None) == (self.steps is None):
            raise SettingError("epochs", "and --steps: give the run's length as exactly one "
                                         "of --epochs and --steps")
        validate(self)
        if self.steps and self.warmup_steps is not None and self.warmup_steps >= self.steps:
            raise SettingError("warmup_steps", f"{self.warmup_steps} must be smaller than the "
                               f"run's {self.steps} steps: lower --warmup-steps or raise --steps")
        if self.init_step is not None and not (self.init_step == "best"
                                               or self.init_step.isdigit()):
            raise SettingError("init_step", f"takes a step number or best, got "
                                            f"{self.init_step!r}")
        if self.init_step is not None and self.init_from is None:
            raise SettingError("init_step", "goes with --init-from WORKDIR")
        for name in ("freeze", "final_eval", "wandb_tags"):
            if isinstance(getattr(self, name), list):  # from JSON or TOML
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self.final_eval_options()  # raises on a bad entry
        if self.batch_size % self.accumulate:
            raise SettingError("accumulate", f"{self.accumulate} must divide --batch-size "
                               f"{self.batch_size} (micro-batches are equal): pick a divisor "
                               "or another batch size")


    def final_eval_options(self) -> dict:
        """{"iw": K, "samples": N} from final_eval ("iw=K", "samples=N"); a bad entry
        is a SettingError."""
        out = {}
        for item in self.final_eval or ():
            name, _, value = item.partition("=")
            if name not in FINAL_EVALS or not value.isdigit() or int(value) < 1:
                raise SettingError("final_eval", f"takes iw=K (K importance samples) or "
                                   f"samples=N (N samples per class for the judge), K and N "
                                   f"positive integers, got {item!r}")
            out[name] = int(value)
        return out


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: str
    model_config: Any
    data: DataConfig
    train: TrainConfig

    def __post_init__(self):
        if self.model not in MODELS:
            raise SettingError("model", f"must be one of {', '.join(MODELS)}, got "
                                        f"{self.model!r}")
        if self.task not in models()[self.model].families:
            able = [name for name, m in models().items() if self.task in m.families]
            raise SettingError("dataset", f"{self.data.dataset} needs --model "
                               f"{' or '.join(able)}, not {self.model}")
        if self.data.is_text and self.train.epochs is not None:
            raise SettingError("epochs", "does not apply: text runs are measured in steps: "
                                         "pass --steps N")
        final = self.train.final_eval_options()
        if "iw" in final and (self.model != "vae" or self.model_config.likelihood != "bernoulli"):
            raise SettingError("final_eval", "iw=K applies to VAE runs with --likelihood "
                               "bernoulli (a Transformer's test loss is already an exact NLL)")
        if "samples" in final and self.data.is_text:
            raise SettingError("final_eval", "samples=N scores image samples, not text")

    def family(self):
        """The model family object (models/family.py) of this run."""
        import importlib

        module, name = models()[self.model].families[self.task].split(":")
        cls = getattr(importlib.import_module(f"jaxtrain.models.{module}"), name)
        precision = self.train.precision
        if self.data.is_text:
            return cls(self.model_config, self.data.text_tokenizer(), precision=precision)
        return cls(self.model_config, precision=precision)

    @property
    def task(self) -> str:  # what the run models
        return "text" if self.data.is_text else "images"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """The config saved with a run; fields added since it was saved take defaults, or
        the values the run was made with (LEGACY: the model's, the optimizer's)."""
        model = d.get("model")
        if model not in MODELS:
            raise RunMismatch(f"the run's config names model {model!r}, which this jaxtrain "
                              f"does not know (known: {', '.join(MODELS)})")
        config_class = MODELS[model]
        return cls(model=model,
                   model_config=config_class(**saved_fields(config_class, d["model_config"])),
                   data=DataConfig(**d["data"]),
                   train=TrainConfig(**saved_fields(TrainConfig, d["train"])))


SECTIONS = {"data": DataConfig, "train": TrainConfig}


def model_config_class(model: str):
    if model not in MODELS:
        raise SettingError("model", f"must be one of {', '.join(MODELS)}, got {model!r}")
    return MODELS[model]
