"""The `jaxtrain` command line: options in, a validated config out, the trainer called.

JAX, torch and the trainer are imported inside the commands, so `--help` is instant.
Every user error ends as one line on stderr and exit code 2, without a traceback.
"""

import enum
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Train, resume, sample and evaluate class-conditional generative models "
                       "(a VAE, a small Transformer) on MNIST-family data with JAX, Flax, Optax "
                       "and Orbax.")

WORKDIR_HELP = "Run folder: checkpoints, metrics.jsonl and PNGs."
DEFAULT_WORKDIR = Path("checkpoints/vae")
DEVICES_HELP = ("Train data-parallel on this many devices, the batch split between them "
                "[default: all JAX devices; a CPU is one unless XLA_FLAGS="
                "--xla_force_host_platform_device_count=N].")


class Model(str, enum.Enum):
    vae = "vae"
    transformer = "transformer"


class Dataset(str, enum.Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    text = "text"


class Likelihood(str, enum.Enum):
    bernoulli = "bernoulli"
    gaussian = "gaussian"


def _widths(text: str, flag: str) -> tuple:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers like 512,256, got {text!r}")


# Training defaults that differ between model families.
MODEL_DEFAULTS = {"vae": {"batch_size": 128, "lr": 2e-3},
                  "transformer": {"batch_size": 32, "lr": 1e-3}}


@app.command()
def fit(
    model: Model = typer.Option(Model.vae, help="Model family to train."),
    dataset: Dataset = typer.Option(
        Dataset.mnist, help="Training data; text (a character model of --data-file) needs "
                            "--model transformer."),
    data_dir: Optional[Path] = typer.Option(
        None, help="Folder holding MNIST/raw/ or FashionMNIST/raw/ IDX files "
                   "[default: ~/.cache/jaxtrain]."),
    data_file: Optional[Path] = typer.Option(
        None, help="text: a UTF-8 file; its first 90% trains, the last 10% validates."),
    download: bool = typer.Option(True, help="Download the data if it is missing."),
    workdir: Optional[Path] = typer.Option(
        None, help=WORKDIR_HELP + " [default: checkpoints/<model>]"),
    overwrite: bool = typer.Option(False, help="Replace a run already in the workdir."),
    epochs: Optional[int] = typer.Option(
        None, help="Epochs in the run; the LR schedule spans the run [default: 10 for images]."),
    steps: Optional[int] = typer.Option(
        None, help="Optimizer steps in the run, instead of --epochs [default: 2000 for text]."),
    eval_every: Optional[int] = typer.Option(
        None, help="Steps between evaluations and checkpoints [default: one epoch; 250 for "
                   "text]."),
    stop_at_epoch: Optional[int] = typer.Option(
        None, help="Stop after this epoch, leaving the run resumable (e.g. for a time-limited "
                   "job)."),
    batch_size: Optional[int] = typer.Option(
        None, help="Examples per step and per eval batch [default: vae 128, transformer 32]."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and sampling."),
    lr: Optional[float] = typer.Option(
        None, help="Peak learning rate of AdamW [default: vae 2e-3, transformer 1e-3]."),
    warmup_steps: int = typer.Option(
        200, help="Linear warmup steps from lr/100 before cosine decay."),
    weight_decay: float = typer.Option(1e-4, help="AdamW decoupled weight decay."),
    grad_clip: float = typer.Option(1.0, help="Clip gradients to this global norm."),
    ema_decay: float = typer.Option(
        0.998, help="Decay of the parameter EMA used for eval and sampling."),
    keep: int = typer.Option(3, help="Latest checkpoints to keep (the best one is kept too)."),
    encoder_widths: Optional[str] = typer.Option(
        None, help="vae: encoder hidden widths, comma-separated [default: 512,256]."),
    decoder_widths: Optional[str] = typer.Option(
        None, help="vae: decoder hidden widths, comma-separated [default: 256,512]."),
    latent_dim: Optional[int] = typer.Option(None, help="vae: size of the latent z [default: 32]."),
    likelihood: Optional[Likelihood] = typer.Option(
        None, help="vae: bernoulli (logits + binary cross-entropy, loss in nats; the default) "
                   "or gaussian (the tutorial's squared error)."),
    kl_weight: Optional[float] = typer.Option(
        None, help="vae: weight of the KL term in the training loss [default: 1; the reported "
                   "test loss is always the true -ELBO]."),
    layers: Optional[int] = typer.Option(None, help="transformer: blocks [default: 4]."),
    d_model: Optional[int] = typer.Option(None, help="transformer: width [default: 128]."),
    heads: Optional[int] = typer.Option(None, help="transformer: attention heads [default: 4]."),
    dropout: Optional[float] = typer.Option(None, help="transformer: dropout rate [default: 0.1]."),
    context: Optional[int] = typer.Option(
        None, help="transformer: sequence length; digits need 196 (their default), text "
                   "defaults to 256."),
    devices: Optional[int] = typer.Option(None, help=DEVICES_HELP),
):
    """Train a new run."""
    from jaxtrain.training import trainer
    from jaxtrain.training.config import (
        MODELS,
        DataConfig,
        RunConfig,
        TrainConfig,
        default_data_dir,
    )
    from jaxtrain.training.parallel import initialize_distributed

    trainer.use_compilation_cache()

    if stop_at_epoch is not None and stop_at_epoch <= 0:
        raise ValueError(f"--stop-at-epoch must be a positive integer, got {stop_at_epoch}")
    initialize_distributed()
    family_options = {
        "vae": {"encoder_widths": encoder_widths and _widths(encoder_widths, "--encoder-widths"),
                "decoder_widths": decoder_widths and _widths(decoder_widths, "--decoder-widths"),
                "latent_dim": latent_dim, "kl_weight": kl_weight,
                "likelihood": likelihood and likelihood.value},
        "transformer": {"layers": layers, "d_model": d_model, "heads": heads, "dropout": dropout,
                        "context": context},
    }
    for other, options in family_options.items():
        for name, value in options.items():
            if other != model.value and value is not None:
                raise ValueError(f"--{name.replace('_', '-')} is a {other} option; it does not "
                                 f"apply to --model {model.value}")
    chosen = {k: v for k, v in family_options[model.value].items() if v is not None}
    text = dataset == Dataset.text
    if text and model != Model.transformer:
        raise ValueError(f"--dataset text needs --model transformer, not {model.value}")
    if text:
        chosen.setdefault("context", 256)
        if epochs is None and steps is None:
            steps = 2000
    elif epochs is None and steps is None:
        epochs = 10
    defaults = MODEL_DEFAULTS[model.value]
    config = RunConfig(
        model=model.value,
        model_config=MODELS[model.value][0](**chosen),
        data=DataConfig(dataset=dataset.value, download=download,
                        data_dir=str((data_dir or Path(default_data_dir())).absolute()),
                        data_file=data_file and str(data_file.absolute())),
        train=TrainConfig(epochs=epochs, steps=steps, eval_every=eval_every,
                          batch_size=defaults["batch_size"] if batch_size is None else batch_size,
                          lr=defaults["lr"] if lr is None else lr, warmup_steps=warmup_steps,
                          weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay,
                          seed=seed, keep=keep))
    workdir = workdir or Path("checkpoints") / model.value
    trainer.fit(config, workdir, overwrite=overwrite, stop_at_epoch=stop_at_epoch,
                devices=devices)
    _done(workdir)


def _done(workdir: Path):
    pngs = " and PNGs" if any(workdir.glob("*.png")) else ""
    print(f"done: checkpoints in {workdir / 'checkpoints'}, metrics in "
          f"{workdir / 'metrics.jsonl'}{pngs}", file=sys.stderr)


@app.command()
def resume(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    epochs: Optional[int] = typer.Option(
        None, help="Raise the run's total epochs (the LR schedule is rebuilt for the new total)."),
    steps: Optional[int] = typer.Option(
        None, help="Raise the total steps of a run measured in steps (text)."),
    stop_at_epoch: Optional[int] = typer.Option(None, help="Stop after this epoch, resumable."),
    data_dir: Optional[Path] = typer.Option(None, help="Read the data from here instead of the "
                                                       "folder saved with the run."),
    data_file: Optional[Path] = typer.Option(None, help="text: read this file instead of the "
                                                        "one saved with the run."),
    devices: Optional[int] = typer.Option(None, help=DEVICES_HELP),
):
    """Continue a run from its latest checkpoint, with its saved settings."""
    from jaxtrain.training import trainer
    from jaxtrain.training.parallel import initialize_distributed

    trainer.use_compilation_cache()
    for flag, value in (("--epochs", epochs), ("--steps", steps),
                        ("--stop-at-epoch", stop_at_epoch)):
        if value is not None and value <= 0:
            raise ValueError(f"{flag} must be a positive integer, got {value}")
    initialize_distributed()
    trainer.resume(workdir, epochs=epochs, steps=steps, data_dir=data_dir and data_dir.absolute(),
                   data_file=data_file and data_file.absolute(), stop_at_epoch=stop_at_epoch,
                   devices=devices)
    _done(workdir)


@app.command()
def sample(
    label: Optional[str] = typer.Option(
        None, "--class", help="Digits: class to generate, 0-9, or 'all' for one row per class."),
    prompt: Optional[str] = typer.Option(
        None, help="Text: the text to continue; the result is printed."),
    length: int = typer.Option(500, help="Text: characters to generate."),
    num: int = typer.Option(64, help="Number of images (with 'all': spread over the rows)."),
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    out: Optional[Path] = typer.Option(None, help="PNG to write [default: "
                                                  "<workdir>/sample_class_<class>.png]."),
    seed: int = typer.Option(0, help="Seed of the sampling."),
    step: Optional[int] = typer.Option(None, help="Checkpoint step [default: latest]."),
    temperature: Optional[float] = typer.Option(
        None, help="transformer: softmax temperature; 0 is greedy [default: 1]."),
    top_k: Optional[int] = typer.Option(
        None, help="transformer: sample among the k likeliest tokens [default: all]."),
):
    """Generate from the EMA parameters: a PNG grid of one class (digits), or text."""
    from jaxtrain.training import trainer

    trainer.use_compilation_cache()
    if temperature is not None and temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {top_k}")
    if (label is None) == (prompt is None):
        raise ValueError("pass --class N (a digits model) or --prompt TEXT (a text model)")
    if prompt is not None:
        if length <= 0:
            raise ValueError(f"--length must be a positive integer, got {length}")
        print(trainer.sample_text(workdir, prompt, length, seed=seed, step=step,
                                  temperature=temperature, top_k=top_k))
        return
    if label != "all":
        try:
            label = int(label)
        except ValueError:
            raise ValueError(f"--class takes a class number (0-9) or 'all', got {label!r}")
    if num <= 0:
        raise ValueError(f"--num must be a positive integer, got {num}")
    path = trainer.sample(workdir, label, num, out=out, seed=seed, step=step,
                          temperature=temperature, top_k=top_k)
    print(f"wrote {path}")


@app.command("eval")
def eval_(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    step: Optional[int] = typer.Option(None, help="Checkpoint step [default: latest]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    data_dir: Optional[Path] = typer.Option(None, help="Read the data from here instead of the "
                                                       "folder saved with the run."),
    data_file: Optional[Path] = typer.Option(None, help="text: read this file instead of the "
                                                        "one saved with the run."),
):
    """Print the test metrics of a checkpoint, computed with the EMA parameters."""
    import json

    from jaxtrain.training import trainer

    trainer.use_compilation_cache()
    m = trainer.eval_checkpoint(workdir, step=step, data_dir=data_dir and data_dir.absolute(),
                                data_file=data_file and data_file.absolute())
    if as_json:
        print(json.dumps(m))
    else:
        where = f"step {m.pop('step')}" + (f" (epoch {m.pop('epoch')})" if "epoch" in m else "")
        unit = "character" if m["dataset"] == "text" else "image"
        print(f"{m.pop('model')} on {m.pop('dataset')} ({m.pop('test_examples')} test "
              f"{'windows' if unit == 'character' else 'images'}), {where}: "
              f"{trainer.describe(m)}; losses in nats per {unit}")


def main():
    """Entry point: runs the app and turns user errors into one line on stderr."""
    from jaxtrain.training.errors import Interrupted

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except (ValueError, OSError) as e:  # boundary errors name the value and the fix
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"error: {first_line}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ValueError) else 1)
    except Exception as e:
        # Typer's (vendored) click errors: unknown option, bad choice, not a number...
        if not hasattr(e, "format_message") or not hasattr(e, "exit_code"):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # its message is the help text
            print(e.format_message())
            sys.exit(0)
        ctx = getattr(e, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {e.format_message()}{where}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
