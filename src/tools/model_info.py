"""Print a network's trainable parameters (M) and multiply-adds (G) at a given input size.

    python -m src.tools.model_info --net_name resnet50 --head dropcov [--cov_dim 128]
        [--post_norm none|isqrt] [--class_num 1000] [--image_size 224]
    python -m src.tools.model_info --table     # the six rows of the seed README's table

Counts are analytic (see :mod:`src.models.info`); nothing is built or run.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import DropCovError
from ..models.info import SEED_TABLE, describe_model

HEADER = f"{'net_name':<10} {'head':<8} {'cov_dim':>7} {'post_norm':<9} {'class_num':>9} {'image':>5} " \
         f"{'params(M)':>9} {'MACs(G)':>8}"


def format_row(info: dict) -> str:
    """One table line for a :func:`src.models.info.describe_model` result."""
    cov_dim = "-" if info["cov_dim"] is None else str(info["cov_dim"])
    post_norm = "-" if info["post_norm"] is None else info["post_norm"]
    return (f"{info['net_name']:<10} {info['head']:<8} {cov_dim:>7} {post_norm:<9} {info['class_num']:>9} "
            f"{info['image_size']:>5} {info['params_m']:>9.2f} {info['gmacs']:>8.2f}")


def seed_table_rows(image_size: int = 224) -> list[tuple[dict, tuple[float, float]]]:
    """(describe_model result, seed README (params M, GFLOPs)) for the six rows of the seed table."""
    return [(describe_model(name, image_size=image_size, head=head, num_classes=1000), seed)
            for (name, head), seed in SEED_TABLE.items()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m src.tools.model_info", description=__doc__.split("\n")[0])
    parser.add_argument("--net_name", default="resnet50", help="resnet18|34|50|101|152 (default resnet50)")
    parser.add_argument("--head", default="dropcov", help="dropcov | gap (default dropcov)")
    parser.add_argument("--cov_dim", type=int, default=128, help="DropCov reduction channels (default 128)")
    parser.add_argument("--post_norm", default="none", help="none | isqrt (default none)")
    parser.add_argument("--isqrt_iters", type=int, default=5, help="Newton-Schulz iterations (default 5)")
    parser.add_argument("--layer4_stride", type=int, default=0, help="0 = auto (1 dropcov, 2 gap)")
    parser.add_argument("--class_num", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument("--image_size", type=int, default=224, help="square input side (default 224)")
    parser.add_argument("--arch_style", default="mindspore", help="mindspore | torch (default mindspore)")
    parser.add_argument("--table", action="store_true",
                        help="print ResNet-18/34/50 x GAP/DropCov at 1000 classes next to the seed table")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def model_kwargs_from_args(args: argparse.Namespace) -> dict:
    """``describe_model``/``create_model`` keyword arguments from parsed options."""
    return {"num_classes": args.class_num, "head": args.head, "cov_dim": args.cov_dim,
            "post_norm": args.post_norm, "isqrt_iters": args.isqrt_iters,
            "layer4_stride": args.layer4_stride, "arch_style": args.arch_style}


def run(args: argparse.Namespace) -> list[str]:
    """The lines to print for parsed options."""
    if args.table:
        lines = [f"{HEADER} {'seed(M)':>8} {'seed(G)':>8}"]
        for info, (seed_params, seed_gflops) in seed_table_rows(args.image_size):
            lines.append(f"{format_row(info)} {seed_params:>8.1f} {seed_gflops:>8.2f}")
        return lines
    return [HEADER, format_row(describe_model(args.net_name, image_size=args.image_size,
                                              **model_kwargs_from_args(args)))]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        lines = run(args)
    except DropCovError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
