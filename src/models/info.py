"""Parameter and multiply-add counts of the registered networks, computed analytically.

Shapes are propagated through the stem, the four stages and the head of
:mod:`src.models.resnet` (no network is built and MindSpore runs nothing), for any model options.

What is counted:

- parameters: trainable ones only (conv and dense weights, dense bias, BatchNorm gamma and beta, the
  ECA Conv1d's 3 weights); BatchNorm moving statistics are not parameters to train.
- multiply-adds (MACs) of one image at inference: every convolution (``Hout*Wout*Cout*Cin*k*k``)
  and dense layer (``in*out``), and the matrix products of the DropCov head: the covariance
  ``Xc Xc^T`` (``N*d*d``) and, with ``post_norm='isqrt'``, the Newton–Schulz products
  (``(3n-3)*d^3``, ``d^3`` for ``n = 1``). BatchNorm, ReLU, pooling, residual additions, the
  triangle gather and the training-only ECA/dropout branch are not counted — the convention of
  the ResNet literature (ResNet-18 1.81 G, ResNet-34 3.66 G).
"""
from __future__ import annotations

from ..errors import DropCovError
from ._registry import model_spec
from .specs import STAGE_WIDTHS, ResNetArch, resolve_layer4_stride, validate_model_options

PAPER_TABLE: dict[tuple[str, str], tuple[float, float]] = {
    ("resnet18", "gap"): (11.7, 1.81),
    ("resnet18", "dropcov"): (19.6, 3.11),
    ("resnet34", "gap"): (21.8, 3.66),
    ("resnet34", "dropcov"): (29.7, 5.56),
    ("resnet50", "gap"): (25.6, 3.86),
    ("resnet50", "dropcov"): (32.0, 6.19),
}
"""(params M, GFLOPs) of the paper's table (1000 classes, 224x224), for comparison."""

AUTHORS_PYTORCH_TABLE: dict[str, tuple[float, float, float]] = {
    "resnet34": (76.81, 29.6, 5.56),
    "resnet50": (78.19, 32.0, 6.19),
    "resnet101": (79.51, 51.0, 9.90),
}
"""(top-1 %, params M, GFLOPs) published next to the authors' PyTorch DropCov checkpoints (1000 classes,
224x224). The parameters fit a 128-d head, not the 256-d head their code builds."""


def triangle_size(dim: int) -> int:
    """Length ``d(d+1)/2`` of the upper-triangle vector of a ``d x d`` matrix (the DropCov representation)."""
    return dim * (dim + 1) // 2


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a conv/pool with symmetric ``kernel // 2`` padding or TF 'same' (they agree)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class _Counter:
    def __init__(self) -> None:
        self.params = 0
        self.macs = 0

    def conv(self, size: int, cin: int, cout: int, kernel: int, stride: int) -> int:
        out = _conv_out(size, kernel, stride)
        self.params += cout * cin * kernel * kernel
        self.macs += out * out * cout * cin * kernel * kernel
        return out

    def batch_norm(self, channels: int) -> None:
        self.params += 2 * channels

    def dense(self, fan_in: int, fan_out: int) -> None:
        self.params += fan_in * fan_out + fan_out
        self.macs += fan_in * fan_out


def _backbone(counter: _Counter, spec: ResNetArch, image_size: int, layer4_stride: int) -> int:
    """Count the stem and the stages; returns the side of the last feature map."""
    size = counter.conv(image_size, 3, 64, 7, 2)
    counter.batch_norm(64)
    size = _conv_out(size, 3, 2)  # max-pool 3x3/2
    in_channels = 64
    for width, depth, stride in zip(STAGE_WIDTHS, spec.layers, (1, 2, 2, layer4_stride)):
        out_channels = width * spec.expansion
        for index in range(depth):
            block_stride = stride if index == 0 else 1
            if spec.block == "basic":
                out = counter.conv(size, in_channels, width, 3, block_stride)
                counter.conv(out, width, width, 3, 1)
                counter.batch_norm(width)
                counter.batch_norm(width)
            else:
                counter.conv(size, in_channels, width, 1, 1)
                out = counter.conv(size, width, width, 3, block_stride)
                counter.conv(out, width, out_channels, 1, 1)
                counter.batch_norm(width)
                counter.batch_norm(width)
                counter.batch_norm(out_channels)
            if block_stride != 1 or in_channels != out_channels:
                counter.conv(size, in_channels, out_channels, 1, block_stride)
                counter.batch_norm(out_channels)
            in_channels, size = out_channels, out
    return size


def isqrt_matmuls(iters: int) -> int:
    """Batched ``d x d`` matrix products of :func:`src.models.gcp.isqrt` with ``iters`` iterations."""
    return 1 if iters == 1 else 3 * iters - 3


def describe_model(name: str, image_size: int = 224, **options) -> dict:
    """Trainable parameters and inference multiply-adds of ``create_model(name, **options)``.

    Takes the keyword arguments of :func:`src.models.create_model` plus ``image_size`` (square input
    side); initialisation options change no count and are accepted. The ResNets are counted here, the
    vision transformers by :func:`src.models.vit_info.describe_vit`. Returns a dict with the options and
    ``params`` (count), ``params_m`` (millions), ``macs`` (per image), ``gmacs`` (billions) and
    ``feature_size`` (side of the last map).
    """
    spec = model_spec(name)  # DropCovError for an unknown name
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise DropCovError(f"{name} takes no option {', '.join(unknown)}: its options are {', '.join(spec.options)}")
    if spec.family == "vit":
        from .vit_info import describe_vit

        return describe_vit(name, **{"image_size": image_size, **options})
    return _describe_resnet(spec.arch, name, image_size, **options)


def _describe_resnet(arch: ResNetArch, name: str, image_size: int = 224, num_classes: int = 1000,
                     head: str = "dropcov", cov_dim: int = 128, post_norm: str = "none", isqrt_iters: int = 5,
                     layer4_stride: int = 0, adaptive_dropout: bool = True, arch_style: str = "mindspore",
                     conv_init: str = "", dense_init: str = "", eca_init: str = "") -> dict:
    validate_model_options(num_classes=num_classes, head=head, cov_dim=cov_dim, post_norm=post_norm,
                           isqrt_iters=isqrt_iters, layer4_stride=layer4_stride,
                           adaptive_dropout=adaptive_dropout, arch_style=arch_style)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise DropCovError(f"image_size={image_size!r} is not supported: it must be an integer >= 8")
    counter = _Counter()
    size = _backbone(counter, arch, image_size, resolve_layer4_stride(head, layer4_stride))
    if head == "dropcov":
        positions = size * size
        counter.conv(size, arch.out_channels, cov_dim, 1, 1)  # layer_reduce
        counter.batch_norm(cov_dim)  # layer_reduce_bn
        counter.params += 3  # eca_layer.conv (training only: no MACs counted)
        counter.macs += positions * cov_dim * cov_dim  # covariance
        if post_norm == "isqrt":
            counter.macs += isqrt_matmuls(isqrt_iters) * cov_dim ** 3
        counter.dense(triangle_size(cov_dim), num_classes)
    else:
        counter.dense(arch.out_channels, num_classes)
    return {
        "net_name": name, "head": head, "cov_dim": cov_dim if head == "dropcov" else None,
        "post_norm": post_norm if head == "dropcov" else None, "class_num": num_classes,
        "image_size": image_size, "arch_style": arch_style, "feature_size": size,
        "params": counter.params, "params_m": counter.params / 1e6,
        "macs": counter.macs, "gmacs": counter.macs / 1e9,
    }


BYTES_PER_PARAMETER_TRAINED = 16
"""float32 weight, gradient, optimizer moment and its update: what each trained parameter costs at least."""
COVARIANCE_COPIES = 6
"""float32 ``d x d`` (and triangle) buffers per image the DropCov head keeps while training: the covariance,
its upper triangle, the classifier's input, and their gradients."""
MEMORY_SHARE = 0.8
"""The share of the machine's memory a run may plan for (the framework, data workers and the system need the rest)."""


def _physical_memory() -> int | None:
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_network_fits(name: str, options: dict, image_sizes: tuple[int, ...] = (224,), batch_size: int = 1,
                       memory_bytes: int | None = None) -> None:
    """Raise one line before anything is allocated when a network cannot work on this machine:

    - its DropCov head would pool a 1x1 map (an input too small for the backbone's stride), whose covariance
      is zero whatever the image: training and evaluation would run and learn nothing;
    - its parameters and the DropCov head's covariance buffers alone exceed this machine's memory (e.g. a
      mistyped ``class_num`` of 100000000, or a ``cov_dim`` of 20000).
    """
    described = {}
    for size in sorted(set(image_sizes)):
        arguments = {"image_size": size, **options}  # a transformer's options fix its image size
        described[arguments["image_size"]] = describe_model(name, **arguments)
    for size, info in described.items():
        if info.get("head") == "dropcov" and info.get("feature_size", 2) < 2:
            raise DropCovError(f"an image size of {size} leaves a {info['feature_size']}x{info['feature_size']} map "
                               f"after {name}'s last stage: its covariance is zero whatever the image; use "
                               "train_image_size and eval_image_size of at least 24")
    memory_bytes = _physical_memory() if memory_bytes is None else memory_bytes
    if memory_bytes is None:
        return
    info = described[max(described)]
    count = info["params"]
    needed = count * BYTES_PER_PARAMETER_TRAINED
    cov_dim = info.get("cov_dim") or 0
    needed += batch_size * COVARIANCE_COPIES * 4 * cov_dim * cov_dim
    if needed > MEMORY_SHARE * memory_bytes:
        raise DropCovError(f"{name} with these options has {count:,} parameters and needs about "
                           f"{needed / 2**30:,.0f} GiB to train, more than {MEMORY_SHARE:.0%} of this machine's "
                           f"{memory_bytes / 2**30:,.0f} GiB of memory (class_num={options.get('num_classes')}, cov_dim={cov_dim or '-'}?); "
                           "check the config")
