"""Write scikit-learn's handwritten digits as a train/val image folder for the CPU demo.

    python scripts/make_digits_dataset.py OUT [--size 64] [--val-fraction 0.2] [--seed 0] [--force]

1,797 real 8x8 digits, upscaled to --size, split per class with a fixed seed; prints the counts.
A non-empty OUT is refused unless --force (which replaces OUT/train and OUT/val).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.digits import build_digits_imagefolder  # noqa: E402
from src.errors import DropCovError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (gets train/ and val/)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of each class in val/ (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--force", action="store_true", help="replace OUT/train and OUT/val if OUT is not empty")
    args = parser.parse_args(argv)
    try:
        counts = build_digits_imagefolder(args.out, args.size, args.val_fraction, args.seed, force=args.force)
    except DropCovError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: {counts['train']} train + {counts['val']} val images, {args.size}x{args.size} RGB PNG")
    for digit, split_counts in counts["per_class"].items():
        print(f"  class {digit}: {split_counts['train']} train, {split_counts['val']} val")
    return 0


if __name__ == "__main__":
    sys.exit(main())
