"""Where jaxtrain keeps what it makes for itself (downloaded datasets, judges, token
caches, compiled programs, the measured peak): $XDG_CACHE_HOME/jaxtrain, by default
~/.cache/jaxtrain."""

import os
from pathlib import Path


def default_data_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str(Path(cache) / "jaxtrain")
