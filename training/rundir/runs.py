"""`jaxtrain runs`: a table of the runs below a folder, from their config.toml and
metrics.jsonl alone (no JAX; safe while runs train)."""

import datetime
import os
from pathlib import Path

from jaxtrain.training.rundir.records import loss_unit, read_config, read_metrics
from jaxtrain.training.rundir.workdir import RUN_FOLDERS


def find_runs(folder) -> list[dict]:
    """One row per run (a folder with config.toml or metrics.jsonl) below `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: pass the folder that holds your runs "
                         "(default checkpoints/)")
    workdirs = []
    # os.walk skips folders that vanish under it (a training run renames Orbax's
    # temporary folders), and the run's own subfolders are not walked at all.
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in RUN_FOLDERS)
        if "config.toml" in files or "metrics.jsonl" in files:
            workdirs.append(Path(root))
    return [summarize(w) for w in workdirs]


def summarize(workdir: Path) -> dict:
    config, records = read_config(workdir), read_metrics(workdir)
    train = config.get("train", {})
    row = {"workdir": str(workdir), "model": config.get("model", "?"),
           "dataset": config.get("data", {}).get("dataset", "?"),
           "step": records[-1]["step"] if records else 0, "total_steps": None,
           "epoch": records[-1].get("epoch") if records else None,
           "epochs": train.get("epochs"), "best_test_loss": None, "best_step": None,
           "latest_test_loss": None, "unit": loss_unit(config),
           "stopped_early": any(r.get("stopped_early") for r in records)}
    if train.get("steps"):
        row["total_steps"] = train["steps"]
    elif records and records[-1].get("epoch") and train.get("epochs"):
        row["total_steps"] = round(records[-1]["step"] / records[-1]["epoch"] * train["epochs"])
    tested = [r for r in records if "test_loss" in r]
    if tested:
        best = min(tested, key=lambda r: r["test_loss"])
        row.update(best_test_loss=best["test_loss"], best_step=best["step"],
                   latest_test_loss=tested[-1]["test_loss"],
                   best_bits_per_byte=best.get("test_bits_per_byte"))
    files = [p for p in (workdir / "metrics.jsonl", workdir / "config.toml") if p.exists()]
    written = max(p.stat().st_mtime for p in files)
    row["written"] = datetime.datetime.fromtimestamp(written).isoformat(timespec="seconds")
    return row


def format_table(rows: list[dict]) -> str:
    header = ["workdir", "model", "dataset", "step", "best test loss", "latest", "written"]
    lines = [header]
    for r in rows:
        step = f"{r['step']}/{r['total_steps'] or '?'}"
        if r["epoch"] is not None and r["epochs"]:
            step += f" ({r['epoch']:g}/{r['epochs']})"
        if r["stopped_early"]:
            step += " early"
        best = (f"{r['best_test_loss']:.2f} {r['unit']} @{r['best_step']}"
                if r["best_test_loss"] is not None else "-")
        if r.get("best_bits_per_byte") is not None:  # text: a unit that compares tokenizers
            best += f" ({r['best_bits_per_byte']:.3f} bits/byte)"
        latest = f"{r['latest_test_loss']:.2f}" if r["latest_test_loss"] is not None else "-"
        lines.append([r["workdir"], r["model"], r["dataset"], step, best, latest,
                      r["written"].replace("T", " ")])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)
