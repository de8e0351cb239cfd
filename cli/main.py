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
                  help="Train, resume, sample and evaluate a class-conditional VAE on MNIST-family "
                       "data with JAX, Flax, Optax and Orbax.")

WORKDIR_HELP = "Run folder: checkpoints, metrics.jsonl and PNGs."
DEFAULT_WORKDIR = Path("checkpoints/vae")


class Model(str, enum.Enum):
    vae = "vae"


class Dataset(str, enum.Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"


class Likelihood(str, enum.Enum):
    bernoulli = "bernoulli"
    gaussian = "gaussian"


def _widths(text: str, flag: str) -> tuple:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers like 512,256, got {text!r}")


@app.command()
def fit(
    model: Model = typer.Option(Model.vae, help="Model family to train."),
    dataset: Dataset = typer.Option(Dataset.mnist, help="Training data."),
    data_dir: Optional[Path] = typer.Option(
        None, help="Folder holding MNIST/raw/ or FashionMNIST/raw/ IDX files "
                   "[default: ~/.cache/jaxtrain]."),
    download: bool = typer.Option(True, help="Download the data if it is missing."),
    workdir: Optional[Path] = typer.Option(None, help=WORKDIR_HELP + " [default: checkpoints/<model>]"),
    overwrite: bool = typer.Option(False, help="Replace a run already in the workdir."),
    epochs: int = typer.Option(10, help="Epochs in the run (the LR schedule spans them)."),
    stop_at_epoch: Optional[int] = typer.Option(
        None, help="Stop after this epoch, leaving the run resumable (e.g. for a time-limited job)."),
    batch_size: int = typer.Option(128, help="Examples per step (and per eval batch)."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and sampling."),
    lr: float = typer.Option(2e-3, help="Peak learning rate of AdamW."),
    warmup_steps: int = typer.Option(200, help="Linear warmup steps from lr/100 before cosine decay."),
    weight_decay: float = typer.Option(1e-4, help="AdamW decoupled weight decay."),
    grad_clip: float = typer.Option(1.0, help="Clip gradients to this global norm."),
    ema_decay: float = typer.Option(0.998, help="Decay of the parameter EMA used for eval and sampling."),
    keep: int = typer.Option(3, help="Latest checkpoints to keep (the best one is kept too)."),
    encoder_widths: str = typer.Option("512,256", help="Encoder hidden widths, comma-separated."),
    decoder_widths: str = typer.Option("256,512", help="Decoder hidden widths, comma-separated."),
    latent_dim: int = typer.Option(32, help="Size of the latent z."),
    likelihood: Likelihood = typer.Option(
        Likelihood.bernoulli, help="bernoulli: logits + binary cross-entropy, loss in nats; "
                                   "gaussian: the tutorial's squared error."),
    kl_weight: float = typer.Option(1.0, help="Weight of the KL term in the training loss "
                                              "(the reported test loss is always the true -ELBO)."),
):
    """Train a new run."""
    from jaxtrain.models.vae import VAEConfig
    from jaxtrain.training import trainer
    from jaxtrain.training.config import DataConfig, RunConfig, TrainConfig, default_data_dir

    if stop_at_epoch is not None and stop_at_epoch <= 0:
        raise ValueError(f"--stop-at-epoch must be a positive integer, got {stop_at_epoch}")
    config = RunConfig(
        model=model.value,
        model_config=VAEConfig(encoder_widths=_widths(encoder_widths, "--encoder-widths"),
                               decoder_widths=_widths(decoder_widths, "--decoder-widths"),
                               latent_dim=latent_dim, likelihood=likelihood.value,
                               kl_weight=kl_weight),
        data=DataConfig(dataset=dataset.value, download=download,
                        data_dir=str((data_dir or Path(default_data_dir())).absolute())),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                          weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay,
                          seed=seed, keep=keep))
    workdir = workdir or Path("checkpoints") / model.value
    trainer.fit(config, workdir, overwrite=overwrite, stop_at_epoch=stop_at_epoch)
    _done(workdir)


def _done(workdir: Path):
    print(f"done: checkpoints in {workdir / 'checkpoints'}, metrics in "
          f"{workdir / 'metrics.jsonl'}, images in {workdir}/samples_epoch*.png and "
          f"recon_epoch*.png", file=sys.stderr)


@app.command()
def resume(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    epochs: Optional[int] = typer.Option(
        None, help="Raise the run's total epochs (the LR schedule is rebuilt for the new total)."),
    stop_at_epoch: Optional[int] = typer.Option(None, help="Stop after this epoch, resumable."),
    data_dir: Optional[Path] = typer.Option(None, help="Read the data from here instead of the "
                                                       "folder saved with the run."),
):
    """Continue a run from its latest checkpoint, with its saved settings."""
    from jaxtrain.training import trainer

    for flag, value in (("--epochs", epochs), ("--stop-at-epoch", stop_at_epoch)):
        if value is not None and value <= 0:
            raise ValueError(f"{flag} must be a positive integer, got {value}")
    trainer.resume(workdir, epochs=epochs, data_dir=data_dir and data_dir.absolute(),
                   stop_at_epoch=stop_at_epoch)
    _done(workdir)


@app.command()
def sample(
    label: str = typer.Option(..., "--class", help="Class to generate, 0-9, or 'all' for one "
                                                   "row per class."),
    num: int = typer.Option(64, help="Number of images (with 'all': spread over the rows)."),
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    out: Optional[Path] = typer.Option(None, help="PNG to write [default: "
                                                  "<workdir>/sample_class_<class>.png]."),
    seed: int = typer.Option(0, help="Seed of the latents."),
    step: Optional[int] = typer.Option(None, help="Checkpoint step [default: latest]."),
):
    """Write a PNG grid of generated images of one class, from the EMA parameters."""
    if label != "all":
        try:
            label = int(label)
        except ValueError:
            raise ValueError(f"--class takes a class number (0-9) or 'all', got {label!r}")
    if num <= 0:
        raise ValueError(f"--num must be a positive integer, got {num}")
    from jaxtrain.training import trainer

    path = trainer.sample(workdir, label, num, out=out, seed=seed, step=step)
    print(f"wrote {path}")


@app.command("eval")
def eval_(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    step: Optional[int] = typer.Option(None, help="Checkpoint step [default: latest]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    data_dir: Optional[Path] = typer.Option(None, help="Read the data from here instead of the "
                                                       "folder saved with the run."),
):
    """Print the test metrics of a checkpoint, computed with the EMA parameters."""
    import json

    from jaxtrain.training import trainer

    m = trainer.eval_checkpoint(workdir, step=step, data_dir=data_dir and data_dir.absolute())
    if as_json:
        print(json.dumps(m))
    else:
        print(f"{m['model']} on {m['dataset']} test set ({m['test_examples']} images), step "
              f"{m['step']} (epoch {m['epoch']}): test loss {m['test_loss']:.2f} nats/image = "
              f"recon {m['recon']:.2f} + kl {m['kl']:.2f}")


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
