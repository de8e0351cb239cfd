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
        [--epochs 10] [--binarize]
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# name: the flags of `fit` that make it; the first of a comparison is its baseline.
VARIANTS = {"mlp": ["--network", "mlp"], "conv": ["--network", "conv"],
            "local-ar": ["--network", "mlp", "--pixel-model", "local-ar"],
            "local-ar-kl0.1": ["--network", "mlp", "--pixel-model", "local-ar",
                               "--kl-weight", "0.1"]}
RESULT_NAMES = {("mlp", "conv"): "vae_conv", ("mlp", "local-ar"): "vae_local_ar",
                ("mlp", "local-ar", "local-ar-kl0.1"): "vae_local_ar"}


def command(net: str, workdir: Path, epochs: int, binarize: bool = False) -> list[str]:
    return ["jaxtrain", "fit", "--dataset", "fashion-mnist", "--epochs", str(epochs),
            *VARIANTS.get(net, ["FLAGS"]), *(["--binarize"] if binarize else []), "--final-eval",
            "iw=100,samples=100", "--workdir", str(workdir / net), "--overwrite"]


def run(net: str, workdir: Path, epochs: int, binarize: bool) -> None:
    """The fit under /usr/bin/time -v; its stderr (progress, time's report) kept beside."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / f"{net}.err", "w") as err:
        subprocess.run(["/usr/bin/time", "-v", *command(net, workdir, epochs, binarize)],
                       check=True, stdout=subprocess.DEVNULL, stderr=err)


def figures(net: str, workdir: Path) -> dict:
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
            "iw_samples": 100, "class_accuracy": record["test_class_accuracy"],
            "judge_accuracy": float(judge.group(1)) / 100 if judge else None,
            "frechet": record["test_frechet"], "frechet_floor": record["test_frechet_floor"],
            "wall_s": seconds, "judge_trained_s": float(trained.group(1)) if trained else 0.0,
            "train_s": train_s, "max_rss_mb": rss / 1024,
            "cpu_percent": int(cpu.group(1)) if cpu else None,
            "epochs": record["epoch"]}


def wall(f: dict) -> float:
    return f["wall_s"] - f["judge_trained_s"]


def table(out: dict, workdir: Path, epochs: int, binarize: bool) -> str:
    rows = ["| variant | test -ELBO | IW-NLL (K=100) | class accuracy (judge on real) | "
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
    lines = [f"Measured {out['date']} on {out['machine']}, the runs one after the other. "
             f"train s is the record's sum of training periods; CPU is the share of a core "
             f"the whole command got (/usr/bin/time's figure): well under the cores' sum "
             f"means other work ran beside it and its seconds compare loosely. Each run: "
             f"`{' '.join(command('NAME', Path('W'), epochs, binarize))}`, FLAGS: "
             + "; ".join(f"{name}: `{' '.join(VARIANTS[name])}`" for name in out["runs"])
             + ".", "", *rows, ""]
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
    args = parser.parse_args()
    workdir = args.existing or args.workdir
    variants = tuple(args.variants.split(","))
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant {unknown[0]!r}: pick from {', '.join(VARIANTS)}")
    if args.existing is None:
        for net in variants:
            print(f"{net} ...", file=sys.stderr, flush=True)
            run(net, workdir, args.epochs, args.binarize)
    measured = max((workdir / f"{net}.err").stat().st_mtime for net in variants)
    out = {"date": datetime.date.fromtimestamp(measured).isoformat(),
           "machine": f"{os.cpu_count()} CPU cores",
           "runs": {net: figures(net, workdir) for net in variants}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = RESULT_NAMES.get(variants, "vae_" + "_".join(variants).replace("-", "_"))
    name += "_binarized" if args.binarize else ""
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(table(out, workdir, args.epochs, args.binarize))
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
