"""Range checks of every config value; choices are checked against their registries.

Each failure is one :class:`ConfigError` line naming the dotted key, the value and what is
allowed. Whether a setting applies to a choice (e.g. ``gate.estimator`` to a prior family) is
asked of the registered entry, so a new prior or estimator needs no change here.
"""
from __future__ import annotations

import math
import re
from typing import Any

from bayesncl_pyro.config import choices
from bayesncl_pyro.config.device import DEVICE_PATTERN, PRECISIONS
from bayesncl_pyro.config.errors import ConfigError, shown
from bayesncl_pyro.config.schema import LOG_FORMATS, Config, GateConfig

MAX_SEED = 2**32 - 1
"""The largest seed every random generator a run seeds accepts (numpy's takes 32 bits); seeds
derived from it (per rank, per step) are taken modulo 2**32."""


MAX_IMAGE_SIZE = 1024
"""The largest ``data.image_size``: a batch of 256 RGB images of 1024 × 1024 already takes 3 GB."""
MAX_STORE_SIZE = 2 * MAX_IMAGE_SIZE
"""The largest ``data.store_size``: the stored image that training crops from, at most twice the
largest crop (2048 × 2048 is 12 MiB a row; a million images would fill 12 TiB)."""
MAX_BATCH = 65536
"""The largest ``data.batch_size`` and ``data.eval_batch_size``."""
MAX_WIDTH = 16384
"""The widest layer (``model.proj_hidden``, ``model.proj_dim``, ``gate.hidden``): two layers of
16384 units already hold a 1 GB weight matrix."""
MAX_CONVNET_WIDTH = 1024
"""The most channels of the first ``convnet`` layer (the last has 8 times as many)."""
MAX_SCENES_IMAGES = 1_000_000
"""The most generated ``scenes`` images per split (held in memory: 3 kB each at 32 × 32)."""
MAX_PARTICLES = 256
"""The most gate samples per image (``gate.particles``): each multiplies the batch."""
MAX_LR = 1000.0
"""The largest learning rate: far above any that trains, and far below what overflows float32
once scaled by the batch."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={shown(value)} is not allowed; allowed: {allowed}")


def _choice(key: str, value: str, registry: Any) -> None:
    if value not in registry:
        raise ConfigError(registry.unknown(value))


def _finite(value: float) -> bool:
    return math.isfinite(value)


def validate(cfg: Config) -> Config:
    """Range checks for every key, then the choices against their registries."""
    d, m, g, o, t = cfg.data, cfg.model, cfg.gate, cfg.optim, cfg.train
    _require(2 <= d.batch_size <= MAX_BATCH, "data.batch_size", d.batch_size, f"an integer >= 2 and <= {MAX_BATCH}")
    _require(1 <= d.eval_batch_size <= MAX_BATCH, "data.eval_batch_size", d.eval_batch_size,
             f"an integer >= 1 and <= {MAX_BATCH}")
    _require(8 <= d.image_size <= MAX_IMAGE_SIZE, "data.image_size", d.image_size,
             f"an integer >= 8 and <= {MAX_IMAGE_SIZE}")
    _require(d.name != "scenes" or d.image_size >= 16, "data.image_size", d.image_size,
             "an integer >= 16 for data.name=scenes")
    _require(d.store in ("auto", "memory", "mmap"), "data.store", d.store, "auto, memory, mmap")
    _require(d.store_size == 0 or d.image_size <= d.store_size <= MAX_STORE_SIZE, "data.store_size", d.store_size,
             f"0 (store at data.image_size) or an integer >= data.image_size={d.image_size} and <= {MAX_STORE_SIZE}")
    _require(d.train_subset >= 0, "data.train_subset", d.train_subset, "an integer >= 0 (0 = the whole split)")
    s = d.scenes
    _require(2 <= s.num_train <= MAX_SCENES_IMAGES, "data.scenes.num_train", s.num_train,
             f"an integer >= 2 and <= {MAX_SCENES_IMAGES}")
    _require(1 <= s.num_test <= MAX_SCENES_IMAGES, "data.scenes.num_test", s.num_test,
             f"an integer >= 1 and <= {MAX_SCENES_IMAGES}")
    _require(2 <= s.num_classes <= 10, "data.scenes.num_classes", s.num_classes, "2 to 10")
    _require(0.0 <= s.shared_p <= 1.0, "data.scenes.shared_p", s.shared_p, "[0, 1]")
    _require(0.0 <= s.background_class_rate <= 1.0, "data.scenes.background_class_rate", s.background_class_rate,
             "[0, 1] (0 = backgrounds independent of the class)")
    d.augment.validate("data.augment")

    _require(1 <= m.convnet_width <= MAX_CONVNET_WIDTH, "model.convnet_width", m.convnet_width,
             f"an integer >= 1 and <= {MAX_CONVNET_WIDTH}")
    _require(not m.small_stem or m.backbone.startswith("torchvision:"), "model.small_stem", m.small_stem,
             f"false with model.backbone={m.backbone} (the small stem is for torchvision:<ResNet-family name>; "
             "resnet18 has it built in)")
    _require(1 <= m.proj_hidden <= MAX_WIDTH, "model.proj_hidden", m.proj_hidden, f"an integer >= 1 and <= {MAX_WIDTH}")
    _require(2 <= m.proj_dim <= MAX_WIDTH, "model.proj_dim", m.proj_dim, f"an integer >= 2 and <= {MAX_WIDTH}")
    _require(_finite(m.temperature) and m.temperature > 0, "model.temperature", m.temperature, "a number > 0")

    _require(0.0 < g.prior_prob < 1.0, "gate.prior_prob", g.prior_prob, "the open interval (0, 1)")
    _require(_finite(g.kl_weight) and g.kl_weight >= 0, "gate.kl_weight", g.kl_weight, "a number >= 0")
    _require(0.0 < g.threshold < 1.0, "gate.threshold", g.threshold, "the open interval (0, 1)")
    _require(_finite(g.temperature) and g.temperature > 0, "gate.temperature", g.temperature, "a number > 0")
    _require(_finite(g.relax_temperature) and g.relax_temperature > 0, "gate.relax_temperature", g.relax_temperature, "a number > 0")
    _require(1 <= g.particles <= MAX_PARTICLES, "gate.particles", g.particles, f"an integer >= 1 and <= {MAX_PARTICLES}")
    _require(_finite(g.beta_a) and g.beta_a > 0, "gate.beta_a", g.beta_a, "a number > 0")
    _require(_finite(g.beta_b) and g.beta_b > 0, "gate.beta_b", g.beta_b, "a number > 0")
    _require(_finite(g.hard_concrete_temperature) and g.hard_concrete_temperature > 0,
             "gate.hard_concrete_temperature", g.hard_concrete_temperature, "a number > 0")
    _require(0 <= g.hidden <= MAX_WIDTH, "gate.hidden", g.hidden,
             f"an integer >= 1 and <= {MAX_WIDTH}, or 0 (= model.proj_hidden, the authors' gating head)")
    _require(1 <= g.layers <= 3, "gate.layers", g.layers, "1, 2 or 3")

    for key in ("lr", "gate_lr", "classifier_lr"):
        value = getattr(o, key)
        _require(_finite(value) and 0 < value <= MAX_LR, f"optim.{key}", value, f"a number > 0 and <= {MAX_LR:g}")
    _require(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a number >= 0")
    _require(0 <= o.momentum < 1, "optim.momentum", o.momentum, "[0, 1)")
    _require(_finite(o.eta) and o.eta > 0, "optim.eta", o.eta, "a number > 0")
    _require(_finite(o.warmup_epochs) and o.warmup_epochs >= 0, "optim.warmup_epochs", o.warmup_epochs, "a number >= 0")
    _require(_finite(o.min_lr) and 0 <= o.min_lr <= MAX_LR, "optim.min_lr", o.min_lr, f"a number from 0 to {MAX_LR:g}")

    _require(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    _require(t.steps >= 0, "train.steps", t.steps, "an integer >= 0 (0 = no cap)")
    _require(0 <= t.seed <= MAX_SEED, "train.seed", t.seed, f"an integer from 0 to {MAX_SEED} (2**32 - 1)")
    _require(re.fullmatch(DEVICE_PATTERN, t.device) is not None, "train.device", t.device, "auto, cpu, cuda, cuda:N")
    _require(bool(t.out_dir), "train.out_dir", t.out_dir, "a directory path")
    _require(t.precision in PRECISIONS, "train.precision", t.precision, ", ".join(PRECISIONS))
    _require(t.log_every >= 1, "train.log_every", t.log_every, "an integer >= 1")
    _require(t.log in LOG_FORMATS, "train.log", t.log, ", ".join(LOG_FORMATS))
    _require(t.eval_every >= 0, "train.eval_every", t.eval_every, "an integer >= 0 (0 = only at the end)")
    _require(t.keep >= 1, "train.keep", t.keep, "an integer >= 1")
    _require(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every, "an integer >= 0 (0 = each epoch)")
    _require(t.max_bad_steps >= 1, "train.max_bad_steps", t.max_bad_steps, "an integer >= 1")

    # Last: the choices. A declared name is answered without importing the modules that fill a
    # table (config/choices.py); only a name the declarations cannot answer (a plugin's, a family
    # member) imports them, torch among them, so every plain range check above answers first.
    _choice("data.name", d.name, choices.DATASETS)
    _choice("model.backbone", m.backbone, choices.BACKBONES)
    _choice("model.nonneg", m.nonneg, choices.NONNEG)
    _choice("gate.prior", g.prior, choices.PRIORS)
    _choice("gate.estimator", g.estimator, choices.ESTIMATORS)
    _choice("gate.hard_concrete_mode", g.hard_concrete_mode, choices.HARD_CONCRETE_MODES)
    _choice("optim.name", o.name, choices.OPTIMIZERS)
    _choice("optim.scheduler", o.scheduler, choices.SCHEDULERS)
    # hard_concrete and none have no Bernoulli gates to estimate: the family says whether it reads
    # the setting (which needs the family itself, so only when an estimator other than the default is asked for)
    if g.estimator != GateConfig.estimator and not choices.PRIORS.get(g.prior).uses_gate_estimator:
        bernoulli_priors = ", ".join(p for p in choices.PRIORS.names() if choices.PRIORS.get(p).uses_gate_estimator)
        raise ConfigError(f"gate.estimator={shown(g.estimator)} is not allowed; allowed: {GateConfig.estimator} with "
                          f"gate.prior={g.prior}, which does not use gate.estimator (the estimators apply to "
                          f"gate.prior={bernoulli_priors})")
    return cfg
