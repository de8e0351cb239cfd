"""The benchmark scripts still run (on the tiny dataset; their figures mean nothing here)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_vae_epoch_benchmark_runs(data_dir):
    proc = subprocess.run([sys.executable, ROOT / "benchmarks" / "vae_epoch.py", "--dataset",
                           "mnist", "--data-dir", data_dir, "--batch-size", "8", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("data alone", "train steps alone", "data + steps", "eval"):
        assert name in proc.stdout
