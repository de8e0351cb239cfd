"""PNG grids of 28x28 images."""

from pathlib import Path

import numpy as np
from PIL import Image


def make_grid(images, cols: int, pad: int = 2) -> np.ndarray:
    """Images [N, H, W] in [0, 1] -> one uint8 grid [rows * (H + pad) + pad, ...] of
    `cols` columns, row-major, on a white background."""
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    rows = -(-n // cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = image
    return np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)


def save_grid(grid: np.ndarray, path) -> Path:
    """Writes a grid from make_grid as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
