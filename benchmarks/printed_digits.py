"""Writes a folder dataset of printed digits (the ImageFolder layout `--dataset folder`
reads): the digits 0-9 rendered in the machine's TrueType fonts, rotated, scaled,
shifted and thickened at random, white on black like MNIST, as 56x56 PNGs.

    python benchmarks/printed_digits.py OUT [--train 600 --test 100 --seed 0]

gives OUT/train/<digit>/*.png and OUT/test/<digit>/*.png. It is a second image dataset
for a machine without MNIST (docs/training.md's fine-tuning and folder examples use it).
"""

import argparse
import glob
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_GLOBS = ("/usr/share/fonts/truetype/**/*.ttf", "/usr/share/fonts/**/*.otf",
              "/Library/Fonts/*.ttf", "C:/Windows/Fonts/*.ttf")
SIZE = 56


def fonts() -> list[str]:
    found = sorted({f for pattern in FONT_GLOBS for f in glob.glob(pattern, recursive=True)})
    # Symbol and math fonts draw no plain digits.
    return [f for f in found if "Math" not in f and "Symbol" not in f]


def render(digit: int, font_path: str | None, rng) -> Image.Image:
    size = int(rng.integers(30, 44))
    font = (ImageFont.truetype(font_path, size) if font_path
            else ImageFont.load_default(size))
    image = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(image)
    text = str(digit)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font,
                                             stroke_width=int(rng.integers(0, 3)))
    x = (SIZE - (right - left)) / 2 - left + rng.integers(-4, 5)
    y = (SIZE - (bottom - top)) / 2 - top + rng.integers(-4, 5)
    draw.text((x, y), text, fill=255, font=font, stroke_width=int(rng.integers(0, 3)),
              stroke_fill=255)
    return image.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)


def write(out: Path, train: int, test: int, seed: int) -> None:
    paths = fonts() or [None]
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for digit in range(10):
            folder = out / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                font = paths[int(rng.integers(len(paths)))]
                render(digit, font, rng).save(folder / f"{i:05d}.png")
    print(f"wrote {10 * (train + test)} images in {len(paths)} fonts to {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=600, help="images per digit to train on")
    parser.add_argument("--test", type=int, default=100, help="images per digit to test on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write(args.out, args.train, args.test, args.seed)


if __name__ == "__main__":
    main()
