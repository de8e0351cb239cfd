"""What each start-up and exit workaround (training/host/workarounds.py) buys today: the
whole command it is for, timed from the shell with the workaround on and off
(JAXTRAIN_WORKAROUNDS_OFF), alternating, with each run's peak RSS.

    python benchmarks/workarounds.py [--repeats 3] [--out benchmarks/results]

Writes <out>/workarounds.json and workarounds.md. `malloc` has a second row: jemalloc
(where installed) against glibc kept (JAXTRAIN_MALLOC=glibc-kept), jaxtrain's fallback.
Until 2026-12-03 the results had two `precompile` rows, a workaround since dropped
(training/engine/precompile.py quotes them). Needs Fashion-MNIST where `make data`
puts it and the Vim manual (Debian's vim-runtime) for the text commands. About 10
minutes on 2 cores.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import ROOT, _cpu_name, loadavg, peak_rss_command, vim_manual  # benchmarks/bench.py

from jaxtrain.training.host.workarounds import NAMES
from jaxtrain.training.settings.config import DataConfig


def cases(data_dir, text):
    """(workaround, what it is measured on, `jaxtrain` arguments, cold cache, what "off"
    sets: None for JAXTRAIN_WORKAROUNDS_OFF=workaround) per row."""
    vae = ["fit", "--dataset", "fashion-mnist", "--data-dir", data_dir, "--no-download",
           "--steps", 20]
    baby = ["fit", "--model", "transformer", "--dataset", "text", "--data-file", text,
            "--context", 64, "--batch-size", 12, "--steps", 20, "--dropout", 0]
    ctx256 = ["fit", "--model", "transformer", "--dataset", "text", "--data-file", text,
              "--batch-size", 32, "--steps", 30, "--dropout", 0]
    # malloc "on" is jemalloc where it is installed; the second row sets it against
    # glibc's malloc told to keep freed memory (the fallback, JAXTRAIN_MALLOC=glibc-kept).
    return [("torchvision-import", "VAE fit, 20 steps, warm cache", vae, False, None),
            ("tensorboardx-import", "baby GPT fit, 20 steps, warm cache", baby, False, None),
            ("malloc", "context-256 text fit, 30 steps, warm cache", ctx256, False, None),
            ("malloc", "the same; off: glibc kept (`JAXTRAIN_MALLOC=glibc-kept`)", ctx256,
             False, {"JAXTRAIN_MALLOC": "glibc-kept"}),
            ("fast-exit", "VAE fit, 20 steps, warm cache", vae, False, None)]


def timed(args, off: dict | None, cache: Path | None):
    """(seconds, peak RSS MB) of `jaxtrain ARGS` in a fresh workdir with `off`'s variables
    (a workaround turned off); `cache` None: an empty compilation cache of its own."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache or tempfile.mkdtemp()),
           "JAXTRAIN_WORKAROUNDS_OFF": "", **(off or {})}
    command = [sys.executable, "-m", "jaxtrain.cli.main", *map(str, args), "--workdir",
               tempfile.mkdtemp()]
    return peak_rss_command(command, env)


def measure(off_env, args, cold, repeats):
    cache = None if cold else Path(tempfile.mkdtemp())
    if cache:
        timed(args, None, cache)  # fills the cache both sides then use
    on, off = [], []
    for _ in range(repeats):
        on.append(timed(args, None, cache))
        off.append(timed(args, off_env, cache))
    median = {side: {"s": statistics.median(t for t, _ in runs),
                     "rss_mb": statistics.median(m for _, m in runs),
                     "values_s": [t for t, _ in runs]}
              for side, runs in (("on", on), ("off", off))}
    return {**median, "gain_s": median["off"]["s"] - median["on"]["s"]}


def markdown(results):
    m = results["machine"]
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores); load average "
             f"{m['load_before']} before, {m['load_after']} after. Whole commands from the "
             "shell, each workaround on and off (JAXTRAIN_WORKAROUNDS_OFF) in alternating "
             f"runs, the median of {m['repeats']} each; written by "
             "`python benchmarks/workarounds.py`.", "",
             "| workaround | command | on | off | gain | peak RSS on / off |",
             "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| `{r['name']}` | {r['command']} | {r['on']['s']:.2f} s | "
                     f"{r['off']['s']:.2f} s | {r['gain_s']:+.2f} s | "
                     f"{r['on']['rss_mb']:,.0f} / {r['off']['rss_mb']:,.0f} MB |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=DataConfig().data_dir)
    parser.add_argument("--only", choices=NAMES, help="measure this workaround alone")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    text = vim_manual()
    if text is None:
        raise SystemExit("the text rows need the Vim manual (Debian's vim-runtime)")
    machine = {"date": datetime.date.today().isoformat(),
               "cpu": platform.processor() or _cpu_name(), "cores": os.cpu_count(),
               "repeats": args.repeats,
               "load_before": loadavg()}
    rows = []
    for name, what, jax_args, cold, off in cases(args.data_dir, text):
        if args.only and name != args.only:
            continue
        print(f"{name}: {what} ...", file=sys.stderr, flush=True)
        try:
            rows.append({"name": name, "command": what,
                         **measure(off or {"JAXTRAIN_WORKAROUNDS_OFF": name}, jax_args,
                                   cold, args.repeats)})
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"{name}: jaxtrain failed: {e.stderr.decode()[-500:]}") from None
        print(f"  gain {rows[-1]['gain_s']:+.2f} s", file=sys.stderr, flush=True)
    machine["load_after"] = loadavg()
    results = {"machine": machine, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workarounds.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "workarounds.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
