"""The commands that only read runs (so they work while a run trains): sample, eval,
plot, runs, presets."""

import sys
from pathlib import Path
from typing import List, Optional

import typer

from jaxtrain.cli.app import (
    DEFAULT_WORKDIR,
    STEP_HELP,
    WORKDIR_HELP,
    app,
    check_positive,
    parse_step,
    start_jax,
)


@app.command()
def sample(
    label: Optional[str] = typer.Option(
        None, "--class", help="Image models: class to generate: 0-9, a class name "
                              "(fashion-mnist's: sneaker, bag...; a folder's subfolders), or "
                              "'all' for one row per class."),
    prompt: Optional[str] = typer.Option(
        None, help="Text: the text to continue; the result is printed."),
    length: int = typer.Option(500, help="Text: characters to generate."),
    num: int = typer.Option(64, help="Number of images (with 'all': spread over the rows)."),
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    out: Optional[Path] = typer.Option(None, help="PNG to write (text: a file to write the "
                                                  "text to, besides printing it). [default: "
                                                  "<workdir>/sample_class_<class>.png]"),
    seed: int = typer.Option(0, help="Seed of the sampling."),
    step: Optional[str] = typer.Option(None, help=STEP_HELP),
    temperature: Optional[float] = typer.Option(
        None, help="transformer: softmax temperature; 0 is greedy [default: 1]."),
    top_k: Optional[int] = typer.Option(
        None, help="transformer: sample among the k likeliest tokens [default: all]."),
    top_p: Optional[float] = typer.Option(
        None, help="transformer: sample among the likeliest tokens whose probabilities sum to "
                   "at least p (nucleus), after --top-k [default: 1]."),
):
    """Generate from the EMA parameters: a PNG grid of one class (digits), or text."""
    if temperature is not None and not 0 <= temperature < float("inf"):
        raise ValueError(f"--temperature must be a number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"--top-p must be a number in (0, 1], got {top_p}")
    if (label is None) == (prompt is None):
        raise ValueError("pass --class N (a digits model) or --prompt TEXT (a text model)")
    step = parse_step(step)
    if prompt is not None:
        check_positive("--length", length)
    check_positive("--num", num)
    start_jax(devices_env=False)
    from jaxtrain.training.commands import restored

    result = restored.sample(workdir, label, prompt, num, out=out, seed=seed, step=step,
                             length=length, temperature=temperature, top_k=top_k,
                             top_p=top_p)
    if prompt is not None and out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result)
        print(f"wrote {out}", file=sys.stderr)
    print(result if prompt is not None else f"wrote {result}")


@app.command("eval")
def eval_(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    step: Optional[str] = typer.Option(None, help=STEP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    data_dir: Optional[Path] = typer.Option(None, help="Read the data from here instead of the "
                                                       "folder saved with the run."),
    data_file: Optional[Path] = typer.Option(None, help="text: read this file instead of the "
                                                        "one saved with the run."),
    val_file: Optional[Path] = typer.Option(
        None, help="text: score the run on this file or folder of .txt files instead of its "
                   "own validation text (only it is read)."),
    iw_samples: Optional[int] = typer.Option(
        None, help="VAE: also estimate -log p(x|c) with K importance samples per test image "
                   "(a bound that tightens as K grows; 1000 is usual)."),
    samples: Optional[int] = typer.Option(
        None, help="Image models: draw N samples per class and report the judge's class "
                   "accuracy and Frechet distance (`jaxtrain judge` trains the judge, or "
                   "this does once, about a minute and a half)."),
):
    """Print the test metrics of a checkpoint, computed with the EMA parameters."""
    import json

    step = parse_step(step)
    check_positive("--iw-samples", iw_samples)
    check_positive("--samples", samples)
    start_jax(devices_env=False)
    from jaxtrain.training.commands import restored
    from jaxtrain.training.metrics import describe, epoch_text

    m = restored.eval_checkpoint(workdir, step=step, data_dir=data_dir and data_dir.absolute(),
                                 data_file=data_file and data_file.absolute(),
                                 val_file=val_file and val_file.absolute(),
                                 iw_samples=iw_samples, samples=samples)
    if as_json:
        print(json.dumps(m))
    else:
        iw = {k: m.pop(k) for k in ("test_iw_nll", "test_iw_bits_per_dim", "iw_samples", "iw_s")
              if k in m}
        from jaxtrain.training.scoring import quality as scores

        quality = {k: m.pop(k) for k in scores.KEYS if k in m}
        epoch = m.pop("epoch", None)  # a fraction mid-epoch (or in a run of --steps)
        where = f"step {m.pop('step')}" + ("" if epoch is None else
                                           f" (epoch {epoch_text(epoch)})")
        unit = "character" if m["dataset"] == "text" else "image"
        targets = {"binary": ", binarized pixels", "grey": ", grey-level pixels"}.get(
            m.pop("targets", None), "")
        val_file = m.pop("val_file", None)
        windows = "windows" + (f" of {val_file}" if val_file else "")
        print(f"{m.pop('model')} on {m.pop('dataset')} ({m.pop('test_examples')} test "
              f"{windows if unit == 'character' else 'images'}{targets}), {where}: "
              f"{describe(m, f'nats/{unit}')}")
        if iw:
            print(f"importance-weighted NLL ({iw['iw_samples']} samples per image): "
                  f"{iw['test_iw_nll']:.2f} nats/image ({iw['test_iw_bits_per_dim']:.4f} "
                  f"bits/dim) in {iw['iw_s']:.1f} s; a bound on -log p(x|c) that tightens "
                  f"with more samples (1 sample is the -ELBO, {m['test_loss']:.2f})")
        if quality:
            print(scores.describe_quality(quality))


@app.command()
def plot(
    workdirs: List[Path] = typer.Argument(..., help="Run folders to draw, one line each."),
    out: Optional[Path] = typer.Option(None, help="PNG to write [default: <first "
                                                  "workdir>/curves.png]."),
    metric: Optional[str] = typer.Option(
        None, help="Plot this metrics.jsonl key instead of train and test loss "
                   "(e.g. test_loss, test_kl, samples_per_s)."),
):
    """Draw train and test loss against step for one or more runs into a PNG."""
    from jaxtrain.training.rundir.plot import plot_runs

    for w in workdirs:
        if not (w / "metrics.jsonl").exists():
            raise ValueError(f"{w} has no metrics.jsonl: pass the workdir of a run that has "
                             "evaluated at least once")
    print(f"wrote {plot_runs(workdirs, out or workdirs[0] / 'curves.png', metric)}")


@app.command()
def runs(
    folder: Path = typer.Argument(Path("checkpoints"), help="Where to look for runs."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, for scripts."),
):
    """List the runs below a folder: model, data, progress, best and latest test loss."""
    import json

    from jaxtrain.training.rundir.runs import find_runs, format_table

    rows = find_runs(folder)
    if as_json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no runs below {folder}", file=sys.stderr)
    else:
        print(format_table(rows))


@app.command()
def presets():
    """List the presets that `jaxtrain fit --preset NAME` starts from."""
    from jaxtrain.training.settings.files import presets as shipped

    for name, (description, _) in shipped().items():
        print(f"{name:12s} {description}")
