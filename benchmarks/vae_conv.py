"""The VAE's networks against the MLP default (issue 30's targets), as users run them:

    jaxtrain fit --dataset fashion-mnist --epochs 10 [FLAGS] \
        --final-eval iw=100,samples=100 --workdir W/NAME --overwrite

for each variant NAME (VARIANTS: its FLAGS), each under /usr/bin/time -v, one after the
other. Writes benchmarks/results/vae_conv.md and .json (mlp, conv), or with --variants
mlp,local-ar[,local-ar-kl0.1] vae_local_ar.md and .json (a _binarized suffix with
--binarize): test -ELBO, IW-NLL (K = 100), the judge's class accuracy of 100 samples per
class against its accuracy on real test images, Frechet distance against the floor
(training images), wall time, CPU share and peak RSS. With --from W, only the table is written,
from runs this script (or the same commands) made in W.

    python benchmarks/vae_conv.py [--variants mlp,conv] [--workdir W] [--from W]
        [--epochs 10] [--binarize] [--iw 100] [--parallel 1] [--data-dir D]
        [--out benchmarks/results] [--name NAME] [--note TEXT] [--no-table]

--parallel N runs N variants at once (their seconds then compare loosely); each run's
settings (machine, K, N) are kept in W/NAME/bench-settings.json for --from.
benchmarks/gpu_networks.sh runs it on a GPU.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# name: the flags of `fit` that make it; the first of a comparison is its baseline.
VARIANTS = {"mlp": ["--network", "mlp"], "conv": ["--network", "conv"],
            "local-ar": ["--network", "mlp", "--pixel-model", "local-ar"],
            "local-ar-kl0.1": ["--network", "mlp", "--pixel-model", "local-ar",
                               "--kl-weight", "0.1"],
            "conv-wide": ["--network", "conv", "--channels", "64,128"],
            "conv-deep": ["--network", "conv", "--channels", "32,64,128"],
            "conv-s10": ["--network", "conv", "--steps-per-call", "10"],
            "conv-deep-s10": ["--network", "conv", "--channels", "32,64,128",
                              "--steps-per-call", "10"],
            "conv-big": ["--network", "conv", "--channels", "64,128,256"],
            "conv-deep-z64": ["--network", "conv", "--channels", "32,64,128",
                              "--latent-dim", "64"],
            "conv-local-ar-kl0.1": ["--network", "conv", "--pixel-model", "local-ar",
                                    "--kl-weight", "0.1"]}
RESULT_NAMES = {("mlp", "conv"): "vae_conv", ("mlp", "local-ar"): "vae_local_ar",
                ("mlp", "local-ar", "local-ar-kl0.1"): "vae_local_ar"}


# /usr/bin/time -v's lines that figures() reads, for a machine without GNU time.
_TIMED = ("import os, subprocess, sys, time; t = time.perf_counter(); "
          "c = subprocess.Popen(sys.argv[1:]); _, s, u = os.wait4(c.pid, 0); "
          "w = time.perf_counter() - t; e = sys.stderr; "
          "print(f'Percent of CPU this job got: {round(100 * (u.ru_utime + u.ru_stime) / w)}%', "
          "file=e); print(f'Elapsed (wall clock) time (h:mm:ss or m:ss): {int(w // 60)}:"
          "{w % 60:05.2f}', file=e); print(f'Maximum resident set size (kbytes): {u.ru_maxrss}', "
          "file=e); sys.exit(os.waitstatus_to_exitcode(s))")


def command(net: str, workdir: Path, epochs: int, binarize: bool = False, iw: int = 100,
            fit=("jaxtrain", "fit")) -> list[str]:
    return [*fit, "--dataset", "fashion-mnist", "--epochs", str(epochs),
            *VARIANTS.get(net, ["FLAGS"]), *(["--binarize"] if binarize else []), "--final-eval",
            f"iw={iw},samples=100", "--workdir", str(workdir / net), "--overwrite"]


def start(net: str, workdir: Path, epochs: int, binarize: bool, iw: int,
          data_dir: Path | None) -> subprocess.Popen:
    """The fit under /usr/bin/time -v, started; its stderr (progress, time's report) kept
    beside. `python -m jaxtrain.cli.main` where no `jaxtrain` command is installed."""
    workdir.mkdir(parents=True, exist_ok=True)
    fit = (["jaxtrain"] if shutil.which("jaxtrain")
           else [sys.executable, "-m", "jaxtrain.cli.main"]) + ["fit"]
    argv = command(net, workdir, epochs, binarize, iw, fit)
    if data_dir:
        argv += ["--data-dir", str(data_dir), "--no-download"]
    timer = (["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time")
             else [sys.executable, "-c", _TIMED])
    with open(workdir / f"{net}.err", "w") as err:
        return subprocess.Popen([*timer, *argv], stdout=subprocess.DEVNULL, stderr=err)


def machine() -> str:
    """The GPU's name where nvidia-smi names one, and the CPU cores."""
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        gpu = ""
    cores = f"{os.cpu_count()} CPU cores"
    return f"{gpu.splitlines()[0]} ({cores})" if gpu else cores


def figures(net: str, workdir: Path, iw: int) -> dict:
    err = (workdir / f"{net}.err").read_text()
    record = json.loads((workdir / net / "metrics.jsonl").read_text().splitlines()[-1])
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", err)
    parts = [float(p) for p in wall.group(1).split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    cpu = re.search(r"Percent of CPU this job got: (\d+)%", err)
    judge = re.search(r"the judge's own test accuracy ([\d.]+)%", err)
    trained = re.search(r"trained the judge in (\d+) s", err)  # the first run of the data
    train_s = sum(json.loads(line).get("train_s", 0.0) for line in
                  (workdir / net / "metrics.jsonl").read_text().splitlines())
    return {"test_loss": record["test_loss"], "test_iw_nll": record["test_iw_nll"],
            "iw_samples": iw, "class_accuracy": record["test_class_accuracy"],
            "judge_accuracy": float(judge.group(1)) / 100 if judge else None,
            "frechet": record["test_frechet"], "frechet_floor": record["test_frechet_floor"],
            "wall_s": seconds, "judge_trained_s": float(trained.group(1)) if trained else 0.0,
            "train_s": train_s, "max_rss_mb": rss / 1024,
            "cpu_percent": int(cpu.group(1)) if cpu else None,
            "epochs": record["epoch"]}


def wall(f: dict) -> float:
    return f["wall_s"] - f["judge_trained_s"]


def table(out: dict, workdir: Path, epochs: int, binarize: bool) -> str:
    iw = out.get("iw_samples", 100)
    rows = [f"| variant | test -ELBO | IW-NLL (K={iw}) | class accuracy (judge on real) | "
            "Frechet (floor) | train s | wall s | CPU | max RSS |", "|" + " --- |" * 9]
    for net, f in out["runs"].items():
        judge = f"{100 * f['judge_accuracy']:.1f}%" if f["judge_accuracy"] else "?"
        rows.append(f"| {net} | {f['test_loss']:.2f} | {f['test_iw_nll']:.2f} | "
                    f"{100 * f['class_accuracy']:.1f}% ({judge}) | {f['frechet']:.2f} "
                    f"({f['frechet_floor']:.2f}, {f['frechet'] / f['frechet_floor']:.1f}x) | "
                    f"{f['train_s']:.0f} | {f['wall_s']:.0f}"
                    + (f" (of which training the judge: {f['judge_trained_s']:.0f})"
                       if f["judge_trained_s"] else "")
                    + f" | {f['cpu_percent'] or '?'}% | {f['max_rss_mb']:,.0f} MB |")
    (base_name, base), *others = out["runs"].items()
    at_once = out.get("parallel", 1)
    how = ("the runs one after the other" if at_once == 1 else
           "some runs at once on one machine (so their seconds compare loosely)")
    lines = [f"Measured {out['date']} on {out['machine']}, {how}. "
             f"train s is the record's sum of training periods; CPU is the share of a core "
             f"the whole command got (/usr/bin/time's figure): well under the cores' sum "
             f"means other work ran beside it and its seconds compare loosely. Each run: "
             f"`{' '.join(command('NAME', Path('W'), epochs, binarize, iw))}`, FLAGS: "
             + "; ".join(f"{name}: `{' '.join(VARIANTS[name])}`" for name in out["runs"])
             + "." + (f" {out['note']}" if out.get("note") else ""), "", *rows, ""]
    for name, f in others:
        lines.append(f"{name} - {base_name}: test -ELBO {f['test_loss'] - base['test_loss']:+.2f} "
                     f"nats, IW-NLL {f['test_iw_nll'] - base['test_iw_nll']:+.2f} nats, "
                     f"training time {f['train_s'] / base['train_s']:.1f}x, wall time less the "
                     f"judge's training {wall(f) / wall(base):.1f}x.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/jaxtrain-vae-conv"))
    parser.add_argument("--from", dest="existing", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--variants", default="mlp,conv",
                        help=f"comma-separated, the baseline first, of {', '.join(VARIANTS)}")
    parser.add_argument("--binarize", action="store_true",
                        help="binarized pixels (the literature's setting): results in "
                        "vae_conv_binarized.md")
    parser.add_argument("--iw", type=int, default=100,
                        help="importance samples of the final IW-NLL (issue 30's: 1000)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs at once (their times then compare loosely)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="holds FashionMNIST/raw/ [default: jaxtrain's]")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table goes")
    parser.add_argument("--name", default=None, help="the table's file name, without suffix")
    parser.add_argument("--no-table", action="store_true", help="only the runs")
    parser.add_argument("--note", default="", help="a sentence the table's header adds "
                        "(how the runs were made, where the script cannot know it)")
    args = parser.parse_args()
    workdir = args.existing or args.workdir
    variants = tuple(args.variants.split(","))
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant {unknown[0]!r}: pick from {', '.join(VARIANTS)}")
    if args.existing is None:
        settings = {"machine": machine(), "iw_samples": args.iw, "parallel": args.parallel}
        pending, running, failed = list(variants), [], []
        while pending or running:
            while pending and len(running) < args.parallel:
                print(f"{pending[0]} ...", file=sys.stderr, flush=True)
                net = pending.pop(0)
                running.append((net, start(net, workdir, args.epochs, args.binarize, args.iw,
                                           args.data_dir)))
            net, proc = running.pop(0)
            if proc.wait():  # the others go on: a failed variant must not lose their figures
                print(f"{net} failed: see {workdir / net}.err", file=sys.stderr, flush=True)
                failed.append(net)
            else:
                (workdir / net / "bench-settings.json").write_text(json.dumps(settings) + "\n")
        if failed:
            raise SystemExit(f"failed: {', '.join(failed)}")
    if args.no_table:
        return
    settings = [json.loads(f.read_text()) for net in variants
                if (f := workdir / net / "bench-settings.json").exists()]
    measured = max((workdir / f"{net}.err").stat().st_mtime for net in variants)
    out = {"date": datetime.date.fromtimestamp(measured).isoformat(),
           "machine": settings[0]["machine"] if settings else f"{os.cpu_count()} CPU cores",
           "iw_samples": settings[0]["iw_samples"] if settings else args.iw,
           "parallel": max((s["parallel"] for s in settings), default=1), "note": args.note}
    out["runs"] = {net: figures(net, workdir, out["iw_samples"]) for net in variants}
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or RESULT_NAMES.get(variants, "vae_" + "_".join(variants).replace("-", "_"))
    name += "_binarized" if args.binarize else ""
    (args.out / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(table(out, workdir, args.epochs, args.binarize))
    print((args.out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
