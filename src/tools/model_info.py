"""Print a network's trainable parameters (M) and multiply-adds (G) at a given input size.

    python -m src.tools.model_info --config_path config/resnet50_imagenet2012_config.yaml [--image_size 224]
    python -m src.tools.model_info --net_name resnet50 --head gap --class_num 1000   # any config key
    python -m src.tools.model_info --table     # the paper's table, the authors' PyTorch checkpoints and transformers

Counts are analytic (see :mod:`src.models.info`); nothing is built or run.
"""
from __future__ import annotations

import argparse
import sys

from ..cli import run_entry_point
from ..config import Config, load_config
from ..models import model_options
from ..models.info import AUTHORS_PYTORCH_TABLE, PAPER_TABLE, describe_model
from ..models.vit_info import AUTHORS_TABLE

HEADER = f"{'net_name':<18} {'head':<11} {'cov_dim':>7} {'post_norm':<9} {'class_num':>9} {'image':>5} " \
         f"{'params(M)':>9} {'MACs(G)':>8}"


def format_row(info: dict) -> str:
    """One table line for a :func:`src.models.info.describe_model` result."""
    cov_dim = "-" if info["cov_dim"] is None else str(info["cov_dim"])
    post_norm = "-" if info["post_norm"] is None else info["post_norm"]
    row = (f"{info['net_name']:<18} {info['head']:<11} {cov_dim:>7} {post_norm:<9} {info['class_num']:>9} "
           f"{info['image_size']:>5} {info['params_m']:>9.2f} {info['gmacs']:>8.2f}")
    if "gmacs_without_attention" in info:
        row += f"  ({info['gmacs_without_attention']:.2f} without attention products)"
    return row


def paper_table_rows(image_size: int = 224) -> list[tuple[dict, tuple[float, float]]]:
    """(describe_model result, the paper's (params M, GFLOPs)) for the six rows of the paper's table."""
    return [(describe_model(name, image_size=image_size, head=head, num_classes=1000), published)
            for (name, head), published in PAPER_TABLE.items()]


def vit_table_rows(image_size: int = 224) -> list[tuple[dict, tuple[float, float]]]:
    """(describe_model result, the authors' README (params M, GFLOPs)) for the two DropCov transformers.

    The README's GFLOPs leave out the attention products (see :mod:`src.models.vit_info`)."""
    return [(describe_model(name, image_size=image_size, num_classes=1000), published)
            for name, published in AUTHORS_TABLE.items()]


def authors_pytorch_rows(image_size: int = 224) -> list[tuple[dict, tuple[float, float, float]]]:
    """(describe_model result, published (top-1, params M, GFLOPs)) for each authors' PyTorch checkpoint at
    both head widths in question: 128-d (what the published counts fit) and 256-d (what their code builds)."""
    return [(describe_model(name, image_size=image_size, cov_dim=cov_dim, num_classes=1000, arch_style="torch"),
             published)
            for name, published in AUTHORS_PYTORCH_TABLE.items() for cov_dim in (128, 256)]


def _extra_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image_size", type=int, default=224, help="square input side (default 224)")
    parser.add_argument("--table", action="store_true",
                        help="print ResNet-18/34/50 x GAP/DropCov at 1000 classes next to the paper's table, the "
                             "authors' PyTorch checkpoints at 128-d and 256-d heads and their transformers next to "
                             "their figures")


def run(config: Config, args: argparse.Namespace) -> list[str]:
    """The lines to print for a config (or the published rows with ``--table``)."""
    if args.table:
        lines = [f"{HEADER} {'paper(M)':>8} {'paper(G)':>8}"]
        for info, (paper_params, paper_gflops) in paper_table_rows(args.image_size):
            lines.append(f"{format_row(info)} {paper_params:>8.1f} {paper_gflops:>8.2f}")
        lines += ["", "the authors' PyTorch checkpoints (arch_style torch):",
                  f"{HEADER} {'paper(M)':>8} {'paper(G)':>8} {'top-1':>6}"]
        for info, (top1, paper_params, paper_gflops) in authors_pytorch_rows(args.image_size):
            lines.append(f"{format_row(info)} {paper_params:>8.1f} {paper_gflops:>8.2f} {top1:>6.2f}")
        lines += ["", "the authors' transformers (their FLOPs leave out the attention products):",
                  f"{HEADER} {'paper(M)':>8} {'paper(G)':>8}"]
        for info, (paper_params, paper_gflops) in vit_table_rows(args.image_size):
            row = format_row(info)
            extra = row[len(HEADER):] if len(row) > len(HEADER) else ""
            lines.append(f"{row[:len(HEADER)]} {paper_params:>8.1f} {paper_gflops:>8.2f}{extra}")
        return lines
    options = {**model_options(config), "image_size": args.image_size}
    return [HEADER, format_row(describe_model(config.net_name, **options))]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``--config_path FILE`` and any config key, ``--image_size``, ``--table``."""

    def _main(arguments: list[str]) -> int:
        config, args = load_config(arguments, description=__doc__.split("\n")[0],
                                   extra_arguments=_extra_options)
        print("\n".join(run(config, args)))
        return 0

    return run_entry_point(_main, argv, program="model_info")


if __name__ == "__main__":
    sys.exit(main())
