"""Every config key, once: its type, default, help text, allowed values and lower bound.

:class:`Config` is the one definition of the configuration. The command-line parser, ``--help``, the type
and range checks (:mod:`src.config.loader`) and the key groups other modules need (which keys shape the
network, which may change when a run is resumed) are all derived from its fields. Allowed values are the
facts of the modules that act on them (the model registry, the schedules, ...), imported, not copied;
none of those imports loads MindSpore.
"""
from __future__ import annotations

import difflib
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from src.data import list_datasets
from src.data.erasing import ERASE_MODES
from src.data.mixup import MIXUP_MODES
from src.data.transforms import EVAL_RESIZE_LIBRARIES, INTERPOLATION_NAMES, TRAIN_INTERPOLATIONS
from src.engine.export import EXPORT_FORMATS
from src.engine.lr_schedule import LR_DECAY_MODES, LR_SCHEDULE_UNITS
from src.engine.optimizer import LOSS_SCALE_TYPES, OPTIMIZER_NAMES
from src.engine.train_step import AMP_LEVELS
from src.kernels.backend import CONV_BACKENDS
from src.models._registry import model_specs
from src.models.ema_weights import WEIGHT_SOURCES
from src.models.init import CONV_INITS, DENSE_INITS, ECA_INITS
from src.models.specs import ARCH_STYLES, HEADS, LAYER4_STRIDES, POST_NORMS
from src.runtime.device import DEVICE_TARGETS, EXECUTION_MODES

Choices = Optional[Union[Sequence[Any], Callable[[], Sequence[Any]]]]

MODEL, DATA, RUN, OPTIM, CHECKPOINT, EXPORT = "model", "data", "run", "optimisation", "checkpoints", "export"


def key(default: Any, help: str, choices: Choices = None, minimum: float | None = None, group: str = RUN,
        resume_check: bool = True, maximum: float | None = None) -> Any:
    """A config key: a dataclass field whose metadata says how to check and document it.

    ``choices`` is a sequence of allowed values or a function returning one (read when checked);
    ``resume_check`` False marks keys that may change freely when a run is resumed (paths, logging).
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "group": group,
                "resume_check": resume_check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _model_names() -> list[str]:
    return [spec.name for spec in model_specs()]


@dataclass(frozen=True)
class Config:
    """The resolved configuration of a run (YAML file, then command line, over these defaults)."""

    # model
    net_name: str = key("resnet50", "network (a name of the model registry, src.models.list_models())",
                        _model_names, group=MODEL)
    head: str = key("dropcov", "classification head: DropCov covariance head or global average pooling", HEADS,
                    group=MODEL)
    cov_dim: int = key(128, "channels of the 1x1 reduction before covariance pooling", minimum=2, group=MODEL)
    post_norm: str = key("none", "covariance post-normalisation: none, or iSQRT matrix square root", POST_NORMS,
                         group=MODEL)
    isqrt_iters: int = key(5, "Newton-Schulz iterations of iSQRT", minimum=1, group=MODEL)
    layer4_stride: int = key(0, "stride of layer4: 0 = auto (1 for dropcov, 2 for gap), 1 or 2", LAYER4_STRIDES,
                             group=MODEL)
    adaptive_dropout: bool = key(True, "adaptive channel dropout in the DropCov head while training", group=MODEL)
    arch_style: str = key("mindspore", "network variant: the published MindSpore one, or the authors' PyTorch "
                          "one (symmetric padding, BN eps 1e-5)", ARCH_STYLES, group=MODEL)
    class_num: int = key(1001, "number of classifier outputs", minimum=1, group=MODEL)
    conv_init: str = key("XavierUniform", "initialiser of the Conv2d weights (HeNormal: PyTorch's "
                         "kaiming_normal_(mode='fan_out', nonlinearity='relu'))", tuple(CONV_INITS), group=MODEL)
    dense_init: str = key("TruncatedNormal", "initialiser of the classifier (TruncatedNormal: sigma 0.01 cut at "
                          "2 sigma, bias 0, as MindSpore 1.9 drew it; PyTorchDefault: nn.Linear's weight and bias "
                          "U(+-1/sqrt(fan_in)))", tuple(DENSE_INITS), group=MODEL)
    eca_init: str = key("Normal", "initialiser of the DropCov head's ECA Conv1d (Normal: sigma 0.01, MindSpore "
                        "1.9's Conv1d default; PyTorchDefault: nn.Conv1d's U(+-1/sqrt(fan_in)))",
                        tuple(ECA_INITS), group=MODEL)
    drop_path_rate: float = key(0.0, "stochastic depth (drop path) of the last block, linearly less before it "
                                "(the transformers; 0.1 in the authors' recipe)", minimum=0.0, group=MODEL, maximum=0.99)
    drop_rate: float = key(0.0, "dropout after the transformers' projections and on their tokens", minimum=0.0,
                           group=MODEL, maximum=0.99)
    token_drop: float = key(0.2, "DropCov's token-mask rate in the transformers' head while training", minimum=0.0,
                            group=MODEL, maximum=0.99)
    cov_drop: float = key(0.5, "dropout on the transformers' cross-covariance representation while training",
                          minimum=0.0, group=MODEL, maximum=0.99)
    embed_dim: int = key(0, "transformers: token width; 0 = the network's own (384)", minimum=0, group=MODEL)
    depth: int = key(0, "transformers: number of blocks; 0 = the network's own (12 DeiT-S, 14 T2T-ViT-14)",
                     minimum=0, group=MODEL)
    num_heads: int = key(0, "transformers: attention heads per block; 0 = the network's own (6)", minimum=0,
                         group=MODEL)
    mlp_ratio: float = key(0.0, "transformers: MLP width / token width; 0 = the network's own (4 DeiT-S, "
                           "3 T2T-ViT-14)", minimum=0.0, group=MODEL)
    wr_heads: int = key(0, "transformers' DropCov head: cross-covariance heads; 0 = the network's own (6)",
                        minimum=0, group=MODEL)
    wr_dim: int = key(0, "transformers' DropCov head: width of each cross-covariance; 0 = the network's own (24)",
                      minimum=0, group=MODEL)
    token_dim: int = key(0, "transformers: channels of the convolutional token stem's first layer; 0 = the "
                         "network's own (64)", minimum=0, group=MODEL)
    # data
    dataset: str = key("imagenet", "dataset format: ImageNet-style class folders, or CIFAR-10 binary",
                       list_datasets, group=DATA)
    data_path: str = key("", "dataset root holding train/ and val/ (or a folder of class folders)", group=DATA,
                         resume_check=False)
    eval_dataset_path: str = key("", "validation folder; empty = DATA_PATH/val", group=DATA, resume_check=False)
    train_image_size: int = key(224, "training crop size", minimum=8, group=DATA)
    eval_image_size: int = key(224, "evaluation centre-crop size (resize to size/eval_crop_pct first)", minimum=8,
                               group=DATA)
    eval_resize_library: str = key("mindspore", "library of the evaluation resize: MindSpore's Resize (the "
                                   "original MindSpore code), or Pillow's antialiased resize with torchvision's "
                                   "sizes and crop (how the authors' PyTorch code and timm score); "
                                   "eval_interpolation picks the filter", EVAL_RESIZE_LIBRARIES, group=DATA)
    train_crop_min_scale: float = key(0.08, "smallest random-crop area (fraction of the image) when training",
                                      minimum=0.01, group=DATA, maximum=1.0)
    train_hflip: bool = key(True, "random horizontal flip when training", group=DATA)
    safe_decode: bool = key(True, "decode images with Pillow so a corrupt file stops the run with its name "
                            "(False: MindSpore's fused decode ops, which can crash on some corrupt JPEGs)",
                            group=DATA)
    # data: the modern recipe's augmentation (timm / DeiT); all off by default
    train_interpolation: str = key("bilinear", "resampling of the training crop and RandAugment (bicubic: "
                                   "Pillow's, as timm; random: either, per image)", TRAIN_INTERPOLATIONS, group=DATA)
    eval_interpolation: str = key("bilinear", "resampling of the evaluation resize (bicubic: Pillow's, as timm)",
                                  INTERPOLATION_NAMES, group=DATA)
    eval_crop_pct: float = key(0.875, "evaluation centre crop as a fraction of the resized shorter side (timm's "
                               "crop_pct)", minimum=0.01, group=DATA, maximum=1.0)
    auto_augment: str = key("", "timm RandAugment policy, e.g. rand-m9-mstd0.5-inc1 (DeiT); empty = off",
                            group=DATA)
    color_jitter: float = key(0.0, "brightness/contrast/saturation jitter factor; unused with auto_augment, as "
                              "in timm", minimum=0.0, group=DATA)
    random_erase_prob: float = key(0.0, "probability of random erasing per image (DeiT: 0.25)", minimum=0.0,
                                   group=DATA, maximum=1.0)
    random_erase_mode: str = key("pixel", "fill of erased boxes: per-pixel normal noise, one normal colour, or "
                                 "zeros", ERASE_MODES, group=DATA)
    random_erase_count: int = key(1, "most boxes erased per image", minimum=1, group=DATA)
    mixup_alpha: float = key(0.0, "Mixup Beta(alpha, alpha); 0 = off (DeiT: 0.8)", minimum=0.0, group=DATA)
    cutmix_alpha: float = key(0.0, "CutMix Beta(alpha, alpha); 0 = off (DeiT: 1.0)", minimum=0.0, group=DATA)
    cutmix_minmax: list[float] = key([], "CutMix box side range [min, max] (fractions of the image) instead of "
                                     "cutmix_alpha; empty = off", group=DATA)
    mixup_prob: float = key(1.0, "probability of mixing a batch (or pair, image)", minimum=0.0, group=DATA, maximum=1.0)
    mixup_switch_prob: float = key(0.5, "probability of CutMix rather than Mixup when both are on", minimum=0.0,
                                   group=DATA, maximum=1.0)
    mixup_mode: str = key("batch", "what shares one Mixup/CutMix draw", MIXUP_MODES, group=DATA)
    batch_size: int = key(64, "images per device per step", minimum=1, group=DATA)
    num_parallel_workers: int = key(8, "data-loading workers per device (capped at the CPU count)", minimum=1,
                                    group=DATA, resume_check=False)
    # run
    device_target: str = key("GPU", "device to run on", DEVICE_TARGETS)
    device_id: int = key(0, "device index for single-device runs", minimum=0, resume_check=False)
    conv_backend: str = key("auto", "CPU convolution kernels: oneDNN blocked-layout kernels built from csrc/ "
                            "(onednn), MindSpore's own (stock), or onednn where it can run (auto: CPU, amp O0)",
                            CONV_BACKENDS)
    mode_name: str = key("GRAPH_MODE", "MindSpore execution mode", EXECUTION_MODES)
    run_distribute: bool = key(False, "data parallel across the processes started by mpirun or msrun")
    device_num: int = key(1, "expected number of devices (the communicator's count wins)", minimum=1)
    all_reduce_fusion_config: list[int] = key([85, 160], "parameter indices where gradient all-reduce is split")
    seed: int = key(1, "random seed: initial weights and dataset shuffling (the same on every rank); each rank "
                    "draws its DropCov masks from seed + rank", minimum=0)
    output_path: str = key("./output", "run folder: checkpoints, logs, metrics, plots, config", resume_check=False)
    # optimisation
    epoch_size: int = key(100, "training epochs", minimum=1, group=OPTIM)
    train_steps_per_epoch: int = key(0, "limit steps per epoch (0 = the whole training split)", minimum=0,
                                     group=OPTIM)
    optimizer: str = key("Momentum", "optimizer", OPTIMIZER_NAMES, group=OPTIM)
    momentum: float = key(0.9, "SGD momentum", minimum=0.0, group=OPTIM, maximum=1.0)
    weight_decay: float = key(1e-4, "weight decay on all weights except BN gamma/beta and biases (unless "
                              "decay_norm_and_bias)", minimum=0.0, group=OPTIM)
    decay_norm_and_bias: bool = key(False, "weight decay on BN gamma/beta and biases too (the authors' PyTorch "
                                    "recipe decays every parameter)", group=OPTIM)
    loss_scale: float = key(1024.0, "loss scale (fixed value, or initial value of the dynamic scale)",
                            minimum=1.0, group=OPTIM)
    loss_scale_type: str = key("fixed", "loss scaling", LOSS_SCALE_TYPES, group=OPTIM)
    amp_level: str = key("O0", "automatic mixed precision level (the DropCov pooling stays float32)", AMP_LEVELS,
                         group=OPTIM)
    lr_decay_mode: str = key("multistep", "learning-rate schedule", LR_DECAY_MODES, group=OPTIM)
    lr_init: float = key(0.0, "learning rate at the start of warmup", minimum=0.0, group=OPTIM)
    lr_max: float = key(0.12, "peak learning rate (after warmup)", minimum=0.0, group=OPTIM)
    lr_end: float = key(0.0, "final learning rate (linear, cosine, poly)", minimum=0.0, group=OPTIM)
    lr_milestones: list[int] = key([30, 60, 90], "epochs where multistep multiplies the rate by lr_gamma",
                                   group=OPTIM)
    lr_gamma: float = key(0.1, "multistep decay factor", minimum=0.0, group=OPTIM)
    lr_power: float = key(2.0, "exponent of the poly schedule", minimum=0.0, group=OPTIM)
    warmup_epochs: float = key(0.0, "epochs of linear warmup from lr_init to lr_max", minimum=0.0, group=OPTIM)
    use_label_smooth: bool = key(True, "label-smoothed cross entropy (with Mixup/CutMix: folded into the soft "
                                 "targets, as timm)", group=OPTIM)
    label_smooth_factor: float = key(0.1, "label smoothing epsilon", minimum=0.0, group=OPTIM, maximum=0.99)
    # optimisation: the modern recipe (AdamW, clipping, accumulation, timm schedules, EMA); all off by default
    adam_betas: list[float] = key([0.9, 0.999], "AdamW's moment decay rates b1 b2", group=OPTIM)
    adam_eps: float = key(1e-8, "AdamW's denominator term", minimum=0.0, group=OPTIM)
    no_decay_1d: bool = key(False, "also exempt every parameter of at most one dimension (timm's rule)",
                            group=OPTIM)
    no_decay_names: list[str] = key([], "parameter names (or their trailing dotted parts) exempt from weight decay, "
                                    "e.g. cls_token; the model's no_weight_decay() names are added", group=OPTIM)
    clip_grad_norm: float = key(0.0, "clip the global gradient norm to this value (after unscaling); 0 = off",
                                minimum=0.0, group=OPTIM)
    accumulation_steps: int = key(1, "batches per optimizer update (gradients averaged; one all-reduce per "
                                  "update)", minimum=1, group=OPTIM)
    lr_schedule_unit: str = key("step", "when the learning rate changes: every step, or once per epoch (timm, "
                                "DeiT)", LR_SCHEDULE_UNITS, group=OPTIM)
    lr_warmup_prefix: bool = key(True, "decay counted from the end of warmup; False: from step 0, as timm's cosine",
                                 group=OPTIM)
    model_ema: bool = key(False, "keep an exponential moving average of the weights and BN statistics; it is "
                          "checkpointed and scored next to the raw weights", group=OPTIM)
    model_ema_decay: float = key(0.9998, "EMA decay per optimizer update", minimum=0.0, group=OPTIM, maximum=1.0)
    model_ema_warmup: bool = key(False, "timm's EMA decay warm-up: 1 - (1 + t)^(-2/3), capped at model_ema_decay",
                                 group=OPTIM)
    # checkpoints, evaluation, logging
    save_checkpoint: bool = key(True, "write checkpoints (rank 0 only)", group=CHECKPOINT)
    save_checkpoint_epochs: int = key(1, "checkpoint every N epochs", minimum=1, group=CHECKPOINT)
    keep_checkpoint_max: int = key(10, "periodic checkpoints kept", minimum=1, group=CHECKPOINT)
    checkpoint_path: str = key("", "folder for checkpoints; empty = OUTPUT_PATH/checkpoints", group=CHECKPOINT,
                               resume_check=False)
    checkpoint_file_path: str = key("", "checkpoint to evaluate, predict with or export", group=CHECKPOINT)
    widths_from_checkpoint: bool = key(False, "build cov_dim and class_num as the checkpoint being evaluated, "
                                       "used for prediction or exported has them (logged and recorded), "
                                       "e.g. for the authors' PyTorch checkpoints of either head width",
                                       group=CHECKPOINT)
    pre_trained: str = key("", "checkpoint to fine-tune from (the classifier is re-initialised if class_num "
                           "differs)", group=CHECKPOINT, resume_check=False)
    resume: str = key("", "resume training: auto (latest in the output folder) or a checkpoint path",
                      group=CHECKPOINT, resume_check=False)
    overwrite: bool = key(False, "start a new run in an output folder that holds an earlier run's checkpoints, "
                          "deleting them and its log and metrics (without it such a run is refused)",
                          group=CHECKPOINT, resume_check=False)
    run_eval: bool = key(False, "score the val split during training", group=CHECKPOINT, resume_check=False)
    eval_start_epoch: int = key(1, "first epoch scored when run_eval is on", minimum=1, group=CHECKPOINT,
                                resume_check=False)
    eval_interval: int = key(1, "score every N epochs", minimum=1, group=CHECKPOINT, resume_check=False)
    save_best_ckpt: bool = key(True, "keep best.ckpt by validation top-1 (of the raw or the EMA weights)",
                               group=CHECKPOINT)
    eval_weights: str = key("auto", "weights eval.py, predict.py and export.py load: auto (what best.ckpt says "
                            "scored best, else raw), raw, or the model EMA's", WEIGHT_SOURCES, group=CHECKPOINT)
    log_interval: int = key(50, "steps between log lines", minimum=1, group=CHECKPOINT, resume_check=False)
    # export
    file_name: str = key("dropcov", "exported model file name (without extension)", group=EXPORT)
    file_format: str = key("MINDIR", "export format", EXPORT_FORMATS, group=EXPORT)
    # where the values came from (not a key)
    config_path: str = field(default="", compare=False, metadata={"group": None})

    def __getattr__(self, name: str) -> Any:  # only called for names that are not attributes
        raise AttributeError(f"config has no key {name!r}{suggestion(name, KEYS)}")

    def to_dict(self) -> dict[str, Any]:
        """Every key and its value, in definition order."""
        return {name: getattr(self, name) for name in KEYS}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def differences_from(self, saved_yaml: str | None) -> list[str]:
        """What changed since a run's saved config (see :func:`config_differences`)."""
        return config_differences(saved_yaml, self.to_dict())

    def structure_differences_from(self, saved_yaml: str | None) -> list[str]:
        """Those of :meth:`differences_from` among :data:`STRUCTURE_KEYS` (the weights cannot reveal them)."""
        return config_differences(saved_yaml, {key: getattr(self, key) for key in STRUCTURE_KEYS})

    def save(self, path: str) -> None:
        """Write the resolved values as YAML (atomically), so a run records exactly what it used."""
        from src.runtime.files import atomic_write_text

        atomic_write_text(path, self.to_yaml())


def _key_fields() -> dict[str, Field]:
    return {item.name: item for item in fields(Config) if item.metadata.get("group")}


KEYS: dict[str, Field] = _key_fields()
"""The config keys (dataclass fields of :class:`Config`), by name, in definition order."""


def keys_in(group: str) -> tuple[str, ...]:
    """The keys of one group (``MODEL``, ``DATA``, ...), in definition order."""
    return tuple(name for name, item in KEYS.items() if item.metadata["group"] == group)


STRUCTURE_KEYS = ("arch_style", "post_norm", "isqrt_iters", "layer4_stride")
"""Model keys that change what a network computes but no parameter name or shape: a checkpoint's weights
load whatever they say, so a difference from the checkpoint's saved config is reported at evaluation."""
RESUME_UNCHECKED_KEYS = tuple(name for name, item in KEYS.items() if not item.metadata["resume_check"])
"""Keys whose change is not reported when a run is resumed (paths, logging, evaluation schedule)."""


def default_of(item: Field) -> Any:
    return item.default_factory() if item.default is MISSING else item.default


def allowed_values(item: Field) -> tuple | None:
    """The allowed values of a key (calling a choices function), or None when any value of its type goes."""
    choices = item.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def suggestion(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def config_differences(saved_yaml: str | None, current: Mapping[str, Any]) -> list[str]:
    """``key: saved -> current`` for config keys that differ from a checkpoint's saved config.

    Logged as warnings on resume: a changed ``epoch_size`` stretches a cosine/linear/poly schedule, a changed
    ``lr_max`` or ``amp_level`` changes the optimisation. Keys of :data:`RESUME_UNCHECKED_KEYS` (paths,
    logging, the evaluation schedule) are not reported."""
    if not saved_yaml:
        return []
    import yaml

    try:
        saved = yaml.safe_load(saved_yaml) or {}
    except yaml.YAMLError:
        return []
    return [f"{key}: {saved[key]!r} -> {value!r}" for key, value in current.items()
            if key in saved and key not in RESUME_UNCHECKED_KEYS and saved[key] != value]
