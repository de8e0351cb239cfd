"""Where a VAE run's Frechet distance comes from: in the judge's features, against the
test images, the training images (the floor), their reconstructions (z the posterior
mean: what the decoder's pixel means cost alone), samples with z from the run's class
prior (what `eval --samples` scores), and samples with z from a Gaussian fitted to each
class's training posteriors (full covariance of the posterior means plus their mean
variance: what a prior matched to the encoder would give).

    python benchmarks/frechet_parts.py WORKDIR [WORKDIR ...] [--per-class 100]

Writes benchmarks/results/frechet_parts.md and .json, a row per run (its EMA parameters,
latest checkpoint). VAE runs on grey images with independent pixels.
"""

import argparse
import datetime
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxtrain.models.judge import frechet_distance
from jaxtrain.models.vae import VAE
from jaxtrain.training.engine.steps import sample_key
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.scoring import judge as judges
from jaxtrain.training.scoring import quality
from jaxtrain.training.sources.base import open_source

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 2000


def posteriors(family, params, images, labels) -> tuple[np.ndarray, np.ndarray]:
    """(means, log-variances) [N, Z] of q(z | x, c) for uint8 images [N, H, W, Ch]."""
    out = [family.model.apply({"params": params}, jnp.asarray(images[s:s + BATCH] / 255.0),
                              jnp.asarray(labels[s:s + BATCH]), method=VAE.encode)
           for s in range(0, len(images), BATCH)]
    return tuple(np.concatenate([np.asarray(o[i]) for o in out]) for i in (0, 1))


def parts(workdir: Path, per_class: int) -> dict:
    restored = checkpoint.restore(workdir, None, ema_only=True)
    config, params = restored.config, restored.ema_params
    family, n = config.family(), config.model_config.num_classes
    if config.model != "vae" or family.sample_pixels == "binary" or \
            config.model_config.pixel_model != "independent":
        raise SystemExit(f"{workdir}: a VAE on grey images with independent pixels, please")
    source = open_source(config)
    judge = judges.judge_of(config.data, source)
    _, test = judge.classify(quality.pixels(source.test.images, False))

    def scored(images, asked):
        predicted, features = judge.classify(images)
        return {"frechet": frechet_distance(features, test),
                "class_accuracy": float(np.mean(predicted == asked))}

    train = source.train
    index = quality.floor_index(train.labels, per_class, n)
    out = {"run": str(workdir), "network": config.model_config.network,
           "step": restored.position["step"],
           "floor": scored(train.images[index] / 255.0, train.labels[index]),
           "reconstructions": scored(np.asarray(family.reconstruct(
               params, jnp.asarray(train.images[index] / 255.0), train.labels[index])),
               train.labels[index])}
    samples, asked = quality.draw(family, params, n, per_class, sample_key(config.train.seed))
    out["class prior"] = scored(samples, asked)
    means, logvars = posteriors(family, params, train.images, train.labels)
    rng, fitted = np.random.default_rng(1), []
    for c in range(n):
        mine = train.labels == c
        cov = np.cov(means[mine].T) + np.diag(np.exp(logvars[mine]).mean(0))
        z = rng.multivariate_normal(means[mine].mean(0), cov, per_class).astype(np.float32)
        fitted.append(np.asarray(family.generate(params, jnp.full(per_class, c), jnp.asarray(z))))
    out["fitted prior"] = scored(np.concatenate(fitted), np.repeat(np.arange(n), per_class))
    return out


def table(results: dict) -> str:
    columns = ("floor", "reconstructions", "class prior", "fitted prior")
    rows = [f"Measured {results['date']} by `python benchmarks/frechet_parts.py` with "
            f"{results['per_class']} images per class: Frechet distance to the test images "
            "in the judge's features (x the floor), the judge's class accuracy in brackets. "
            "Floor: training images; reconstructions: their decoded posterior means; class "
            "prior: samples as `eval --samples` draws them; fitted prior: z from a Gaussian "
            "fitted to each class's training posteriors.", "",
            "| run | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for r in results["runs"]:
        floor = r["floor"]["frechet"]
        cells = [f"{r[c]['frechet']:.2f} ({r[c]['frechet'] / floor:.1f}x; "
                 f"{100 * r[c]['class_accuracy']:.1f}%)" for c in columns]
        rows.append(f"| {Path(r['run']).name} ({r['network']}, step {r['step']}) | "
                    + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    results = {"date": datetime.date.today().isoformat(), "per_class": args.per_class,
               "runs": [parts(w, args.per_class) for w in args.workdirs]}
    (RESULTS / "frechet_parts.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "frechet_parts.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
