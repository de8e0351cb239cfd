"""The judge: a small CNN classifier of a dataset's images whose verdicts and features score a
generator's samples (training/scoring/judge.py trains and keeps it;
training/scoring/quality.py scores).

The network is the Flax MNIST example's (google/flax examples/mnist): two 3x3
convolutions with average pooling, a hidden Dense layer of 256 ReLU units (the features
the Frechet distance is measured in) and the class logits.

Shapes: B batch, C classes, F = 256 features.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURES = 256


class Judge(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, images):
        """images [B, H, W, Ch] in [0, 1] -> (logits [B, C], features [B, F])."""
        x = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2))(images))  # [B, H/2, W/2, 32]
        x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(x))  # [B, H/4, W/4, 64]
        features = nn.relu(nn.Dense(FEATURES)(x.reshape(x.shape[0], -1)))  # [B, F]
        return nn.Dense(self.num_classes)(features), features


def apply_in_batches(model: Judge, params, images: np.ndarray, batch: int = 500):
    """(predicted classes int [N], features float64 [N, F]) of images [N, H, W, C] in [0, 1],
    `batch` at a time (one compiled shape: the last batch is padded)."""
    labels, features = [], []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        n = len(chunk)
        padded = np.pad(chunk, [(0, batch - n)] + [(0, 0)] * (chunk.ndim - 1)).astype(np.float32)
        logits, f = _apply(model, params, padded)
        labels.append(np.asarray(jnp.argmax(logits, -1))[:n])
        features.append(np.asarray(f, np.float64)[:n])
    return np.concatenate(labels), np.concatenate(features)


@functools.partial(jax.jit, static_argnums=0)  # compiled once per network (modules hash)
def _apply(model: Judge, params, images):
    return model.apply({"params": params}, images)


# --- The scores: numpy in float64, so they are exact enough to compare runs. ---


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to feature sets a [N, F] and b [M, F]:
        ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))
    (Heusel et al.'s FID, here in the judge's features). 0 for identical sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), the root of a symmetric
    # PSD matrix: eigh is exact where scipy.linalg.sqrtm of the product is not (singular
    # covariances: fewer samples than features, or dead ReLU features).
    root_a = _psd_sqrt(cov_a)
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = float(np.sum(np.sqrt(np.clip(middle, 0.0, None))))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                 - 2 * trace_root)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def class_accuracy(predicted: np.ndarray, asked: np.ndarray, num_classes: int) -> np.ndarray:
    """[C]: for each class c, the share of the samples asked to be c that the judge
    labels c."""
    return np.array([np.mean(predicted[asked == c] == c) for c in range(num_classes)])
