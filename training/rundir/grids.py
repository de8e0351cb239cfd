"""PNG grids of images, grey or RGB."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def make_grid(images, cols: int, pad: int = 2, row_names=None) -> np.ndarray:
    """Images [N, H, W, C] (C 1 or 3; [N, H, W] is grey) in [0, 1] -> one uint8 grid
    [rows * (H + pad) + pad, ...] (with a last axis of 3 for RGB) of `cols` columns,
    row-major, on a white background; `row_names` are written in a margin on the left,
    one per row (the classes' names)."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    n, h, w = images.shape[:3]
    rows = -(-n // cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]),
                   np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = image
    grid = np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)
    return grid if not row_names else _label_rows(grid, list(row_names)[:rows], h, pad)


def _label_rows(grid: np.ndarray, names: list, h: int, pad: int) -> np.ndarray:
    font = ImageFont.load_default()
    names = [str(n)[:24] for n in names]
    width = max(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(n, font=font)
                for n in names)
    margin = int(width) + 2 * pad + 2
    mode = "L" if grid.ndim == 2 else "RGB"
    canvas = Image.new(mode, (grid.shape[1] + margin, grid.shape[0]), 255 if mode == "L"
                       else (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        top, bottom = draw.textbbox((0, 0), name, font=font)[1::2]
        draw.text((pad, pad + r * (h + pad) + (h - (bottom - top)) // 2 - top), name,
                  fill=0 if mode == "L" else (0, 0, 0), font=font)
    return np.asarray(canvas)


def save_grid(grid: np.ndarray, path) -> Path:
    """Writes a grid from make_grid as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
