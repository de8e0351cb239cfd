"""Reading what runs wrote (metrics.jsonl, config.toml), without JAX: for `jaxtrain
plot` and `jaxtrain runs`, which must answer at once and work while a run trains."""

import json
from pathlib import Path

from jaxtrain.training.settings.files import tomllib  # tomllib, or tomli on Python 3.10


def read_metrics(workdir) -> list[dict]:
    """The evaluation records of a run, in step order (a resume trims the file to its
    checkpoint first, so no step repeats); a half-written last line is skipped."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return records


def read_config(workdir) -> dict:
    """The run's config.toml as a dict ({} if there is none or it does not parse)."""
    try:
        return tomllib.loads((Path(workdir) / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def loss_unit(config: dict) -> str:
    data = config.get("data", {})
    if data.get("dataset") != "text":
        return "nats/image"
    return "nats/char" if data.get("tokenizer", "char") == "char" else "nats/token"


def train_curve(records: list[dict]) -> str:
    """The train metric in the test loss's unit: the digits Transformer's objective is
    per token, its train_nll per image like its test loss."""
    return "train_nll" if any("train_nll" in r for r in records) else "train_loss"
