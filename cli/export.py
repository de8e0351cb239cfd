"""`jaxtrain export`: a checkpoint's EMA parameters as a safetensors file, for PyTorch
and other readers (training/commands/export.py)."""

from pathlib import Path
from typing import Optional

import typer

from jaxtrain.cli.app import DEFAULT_WORKDIR, STEP_HELP, WORKDIR_HELP, app, parse_step, start_jax


@app.command()
def export(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    step: Optional[str] = typer.Option(None, help=STEP_HELP),
    out: Optional[Path] = typer.Option(None, help="The safetensors file to write. "
                                                  "[default: <workdir>/model.safetensors]"),
):
    """Write the EMA parameters of a checkpoint to a safetensors file, with the run's
    config, class names or vocabulary in its metadata (docs/export.md loads it in PyTorch)."""
    step = parse_step(step)
    start_jax(devices_env=False)
    from jaxtrain.training.commands.export import export as write

    path, meta = write(workdir, step=step, out=out)
    print(f"wrote {path} ({meta['model']} on {meta['task']}, step {meta['step']})")
