"""``model.weights``: a local state dict loaded into the backbone, for an encoder someone else trained.

The file is read with ``torch.load(weights_only=True)``. Accepted: a state dict (torchvision's own
checkpoint files, ``torch.save(model.state_dict())``), or a mapping that holds one under
``state_dict`` or ``model`` (Lightning, timm and most training scripts). Keys are matched after
dropping the prefixes training code adds in front of a backbone's own names: ``module.``
(DataParallel/DDP), ``_orig_mod.`` (torch.compile), ``backbone.`` (solo-learn, lightly, this
package's network) and ``net.`` (this package's backbones); keys outside the backbone (a classifier,
a projector) are left out and reported. A tensor of the wrong shape, or a file in which nothing fits,
is refused with the first key that does not fit.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bayesncl_pyro.config.errors import ConfigError, RunWarning

WRAPPER_KEYS = ("state_dict", "model")
PREFIXES = ("module.", "_orig_mod.", "backbone.", "net.")
SHOWN_KEYS = 4


def bare_key(key: str) -> str:
    """``key`` without the wrapper prefixes in front (``module.backbone.net.conv1.weight`` -> ``conv1.weight``)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key, stripped = key[len(prefix):], True
    return key


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the state dict in ``path`` (unwrapped from ``state_dict``/``model``)."""
    where = f"model.weights={str(path)!r}"
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where} does not exist; allowed: a local state-dict file (torch.save of a module's "
                          "state_dict, e.g. a torchvision checkpoint)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or objects weights_only refuses
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{where} cannot be read by torch.load(weights_only=True) ({type(exc).__name__}: {detail}); "
                          "allowed: a file holding a state dict (save model.state_dict(), not the model)") from None
    for _ in range(2):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state, Mapping) and isinstance(state.get(k), Mapping)),
                     None)
        if inner is None:
            break
        state = inner
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, Mapping) else {}
    if not tensors:
        raise ConfigError(f"{where} holds no tensors ({type(state).__name__}); allowed: a state dict, or a mapping "
                          f"with one under {' or '.join(WRAPPER_KEYS)}")
    return tensors


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> str:
    """Load the state dict in ``path`` into ``backbone``; returns the one-line report (and warns
    with it, as a :class:`RunWarning` that commands print as one ``warning:`` line, when a key is
    missing or left out)."""
    where = f"model.weights={str(path)!r}"
    source = read_state_dict(path)
    target = backbone.state_dict()
    by_bare: dict[str, str] = {}
    for key in source:
        bare = bare_key(key)
        if bare in by_bare:
            raise ConfigError(f"{where}: {by_bare[bare]!r} and {key!r} are the same tensor once their prefixes are "
                              f"dropped ({', '.join(PREFIXES)}); allowed: a state dict of one backbone")
        by_bare[bare] = key
    matched = {t: by_bare[bare_key(t)] for t in target if bare_key(t) in by_bare}
    if not matched:
        raise ConfigError(f"{where}: none of its {len(source)} tensors fits the backbone (the file has "
                          f"{_few(list(source))}; the backbone has {_few(list(target))})")
    wrong = [(t, s) for t, s in matched.items() if source[s].shape != target[t].shape]
    if wrong:
        t, s = wrong[0]
        raise ConfigError(f"{where}: {s} has shape {list(source[s].shape)} but the backbone's {t} has "
                          f"{list(target[t].shape)} ({len(wrong)} tensor(s) differ); allowed: weights of this "
                          "architecture at this data.image_size (and model.small_stem)")
    backbone.load_state_dict({t: source[s] for t, s in matched.items()}, strict=False)
    target_bare = {bare_key(t) for t in target}
    missing = [t for t in target if t not in matched]
    unexpected = [k for bare, k in by_bare.items() if bare not in target_bare]
    report = (f"{where}: loaded {len(matched)} of the backbone's {len(target)} tensors; missing (left as "
              f"initialised): {_few(missing)}; unexpected (ignored): {_few(unexpected)}")
    if missing or unexpected:
        warnings.warn(report, RunWarning, stacklevel=2)
    return report
