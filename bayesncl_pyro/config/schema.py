"""The typed run configuration: one dataclass per config section, with its defaults.

The config key, the variable name in code and the log key are the same name for the same
quantity. Reading YAML and ``key=value`` overrides is :mod:`.parsing`; range checks are
:mod:`.validation`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from bayesncl_pyro.config.errors import ConfigError, shown


@dataclass
class AugmentConfig:
    """Ranges and probabilities of the training augmentations (config section ``data.augment``)."""

    crop_scale_min: float = 0.08
    crop_scale_max: float = 1.0
    crop_ratio_min: float = 3 / 4
    crop_ratio_max: float = 4 / 3
    jitter_prob: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    gray_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    flip_prob: float = 0.5

    def validate(self, prefix: str = "data.augment") -> "AugmentConfig":
        """Raise ConfigError naming ``prefix.field`` for the first value outside its allowed range."""

        def require(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"{prefix}.{name}={shown(getattr(self, name))} is not allowed; allowed: {allowed}")

        for f in fields(self):
            value = getattr(self, f.name)
            require(
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                f.name,
                "a finite number",
            )
        for name in ("jitter_prob", "gray_prob", "blur_prob", "flip_prob"):
            require(0.0 <= getattr(self, name) <= 1.0, name, "[0, 1]")
        require(0.0 < self.crop_scale_min <= 1.0, "crop_scale_min", "0 < crop_scale_min <= crop_scale_max <= 1")
        require(
            self.crop_scale_min <= self.crop_scale_max <= 1.0,
            "crop_scale_max",
            "0 < crop_scale_min <= crop_scale_max <= 1",
        )
        require(self.crop_ratio_min > 0.0, "crop_ratio_min", "0 < crop_ratio_min <= crop_ratio_max")
        require(self.crop_ratio_min <= self.crop_ratio_max, "crop_ratio_max", "0 < crop_ratio_min <= crop_ratio_max")
        for name in ("brightness", "contrast", "saturation"):
            require(getattr(self, name) >= 0.0, name, ">= 0")
        require(0.0 <= self.hue <= 0.5, "hue", "[0, 0.5]")
        require(self.blur_sigma_min > 0.0, "blur_sigma_min", "0 < blur_sigma_min <= blur_sigma_max")
        require(self.blur_sigma_min <= self.blur_sigma_max, "blur_sigma_max", "0 < blur_sigma_min <= blur_sigma_max")
        return self


@dataclass
class ScenesConfig:
    """The generated ``scenes`` dataset (SPEC §8)."""

    num_train: int = 20000
    num_test: int = 5000
    num_classes: int = 10
    shared_p: float = 0.7
    color_tied: bool = False
    seed: int = 0
    background_class_rate: float = 0.0
    """Spurious backgrounds: in the training split only, the background is the class's paired one
    with this probability (0 = independent of the class, as in the test split)."""


@dataclass
class DataConfig:
    name: str = "scenes"
    root: str = "data"
    batch_size: int = 256
    eval_batch_size: int = 512
    image_size: int = 32
    train_subset: int = 0
    download: bool = False
    skip_corrupt: bool = False
    cache_dir: str = ""
    store: str = "auto"
    """ImageFolder splits: ``memory`` (one uint8 tensor in each process), ``mmap`` (an on-disk store
    read memory-mapped, shared by every process of the machine; data larger than memory) or
    ``auto`` (``mmap`` when a split would take more than 2 GiB, or with ``store_size``, else
    ``memory``). Other datasets are always held in memory."""
    store_size: int = 0
    """ImageFolder: the stored size S, apart from the training size: short side resized to S and
    centre-cropped to S×S, so random resized crops to ``image_size`` take real pixels (e.g. 256 for
    ``image_size=224``). 0 = store at ``image_size``, the whole image resized to a square."""
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """The networks. ``backbone`` is a registered name (``convnet``, ``resnet18``, ...) or
    ``torchvision:<name>``; ``weights`` a local state-dict file loaded into the backbone when the
    network is first built; ``freeze_backbone`` trains only projector, gates and the online probe
    on the backbone as it was built (eval mode, no gradient); ``small_stem`` gives a torchvision
    ResNet-family backbone the 3x3 stride-1 first convolution without max-pool of 32x32 recipes;
    ``proj_batchnorm`` puts BatchNorm after the projector's hidden layer (SimCLR/solo-learn;
    ``false`` is the authors' BayesNCL head, Linear-ReLU-Linear)."""

    backbone: str = "convnet"
    convnet_width: int = 64
    weights: str = ""
    freeze_backbone: bool = False
    small_stem: bool = False
    proj_hidden: int = 2048
    proj_batchnorm: bool = True
    proj_dim: int = 256
    nonneg: str = "relu"
    temperature: float = 0.2


@dataclass
class GateConfig:
    prior: str = "bernoulli"
    prior_prob: float = 0.8
    kl_weight: float = 3e-5
    threshold: float = 0.5
    temperature: float = 1.0
    estimator: str = "ste"
    relax_temperature: float = 1.0
    particles: int = 4
    beta_a: float = 4.0
    beta_b: float = 1.0
    hard_concrete_mode: str = "l0"
    hard_concrete_temperature: float = 2 / 3
    hidden: int = 512
    """Width of the gate network's hidden layers; 0 = ``model.proj_hidden``, as the authors'
    gating head (Linear(F, proj_hidden)-ReLU-Linear(proj_hidden, D))."""
    layers: int = 2


@dataclass
class OptimConfig:
    name: str = "lars"
    lr: float = 0.4
    scale_lr: bool = True
    gate_lr: float = 0.1
    classifier_lr: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.9
    eta: float = 0.02
    clip_lr: bool = True
    exclude_bias_n_norm: bool = True
    scheduler: str = "warmup_cosine"
    warmup_epochs: float = 10.0
    min_lr: float = 0.0


LOG_FORMATS = ("jsonl", "tensorboard")
"""What ``train.log`` may be: ``metrics.jsonl`` alone, or TensorBoard event files of the same
records beside it (live curves with ``tensorboard --logdir runs``)."""


@dataclass
class TrainConfig:
    epochs: int = 200
    steps: int = 0
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/default"
    precision: str = "32"
    log_every: int = 10
    log: str = "jsonl"
    """Where logged metrics go besides ``metrics.jsonl`` (one of :data:`LOG_FORMATS`)."""
    eval_every: int = 0
    keep: int = 1
    checkpoint_every: int = 0
    max_bad_steps: int = 3
    distributed: bool = False
    sync_bn: bool = False
    compile: bool = False
    channels_last: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


