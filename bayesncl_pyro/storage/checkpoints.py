"""Checkpoints that hold everything an exact resume needs: weights, optimizer, schedule, RNG, step.

A checkpoint file is safe to load from anyone: it holds only tensors, numbers, strings, bytes,
lists, tuples and dicts, and is read with ``torch.load(..., weights_only=True)``, which executes
no code. The file is a small envelope ``{"format": ..., "format_version": 2, "sha256": ...,
"payload": bytes}`` around the state (itself a ``torch.save`` of plain data), so a truncated,
zero-byte or bit-flipped file is caught by its checksum before the state is read.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesncl_pyro.config import Config, flatten
from bayesncl_pyro.config.errors import CheckpointError, clip, shown
from bayesncl_pyro.storage.atomic import atomic_write_bytes
from bayesncl_pyro.storage.environment import git_commit
from bayesncl_pyro.storage.run_directory import LAST_CHECKPOINT, epoch_checkpoints

FORMAT = "bayesncl-pyro checkpoint"
FORMAT_VERSION = 2
# Keys a resumed run may change: where and how long it runs, not what it computes. Any other
# difference between the checkpoint's config and the resuming one is refused.
MAY_CHANGE_ON_RESUME = frozenset({
    "train.steps", "train.epochs", "train.device", "train.log_every", "train.log", "train.out_dir", "train.keep",
    "train.checkpoint_every", "train.max_bad_steps", "train.distributed", "train.compile", "train.eval_every",
    "data.root", "data.eval_batch_size", "data.download", "data.cache_dir", "data.skip_corrupt",
})


FIELDS = {"modules": dict, "optimizer": dict, "scheduler": dict, "scaler": object, "rng": dict, "step": int,
          "epoch": int, "config": dict}
"""The fields every checkpoint holds, with their types (``scaler`` is None without float16)."""


def config_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved value, current value`` for every key that differs and may not change on resume.

    A key the saved config lacks (added to the code after the checkpoint was written) counts as
    its default, the behaviour the code that wrote the checkpoint had."""
    old, new = flatten(saved), flatten(current)
    old = {**{k: v for k, v in flatten(Config().to_dict()).items() if k not in old}, **old}
    return [f"{key}: checkpoint {old.get(key)!r}, config {new.get(key)!r}"
            for key in sorted(set(old) | set(new))
            if key not in MAY_CHANGE_ON_RESUME and old.get(key) != new.get(key)]


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"bit_generator": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["bit_generator"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached_gaussian"]))


def _python_state() -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    return {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}


def _set_python_state(state: dict[str, Any]) -> None:
    random.setstate((state["version"], tuple(int(v) for v in state["state"].tolist()), state["gauss_next"]))


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The global RNG states (torch, numpy, python, this process's CUDA device) and those of the
    run's own ``generators`` (e.g. the augmentation generator), by name, as plain data."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    state["generators"] = {name: g.get_state() for name, g in (generators or {}).items()}
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    _set_numpy_state(state["numpy"])
    _set_python_state(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    saved = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name in saved:
            generator.set_state(saved[name])


def encode(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file holding ``state`` (plain data and tensors only)."""
    payload = io.BytesIO()
    torch.save(state, payload)
    data = payload.getvalue()
    envelope = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": hashlib.sha256(data).hexdigest(),
                "payload": data}, envelope)
    return envelope.getvalue()


def save(path: Path, *, modules: dict[str, torch.nn.Module], optimizer, scheduler, scaler,
         step: int, epoch: int, config: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> Path:
    state = {
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(generators),
        "step": step,
        "epoch": epoch,
        "config": config,
        "code": {"git_commit": git_commit()},
    }
    return atomic_write_bytes(path, encode(state))


def read(path: Path) -> dict[str, Any]:
    """The state in the checkpoint file ``path``, after checking its envelope and checksum; never
    executes code from the file. Every problem is one CheckpointError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        envelope = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data, so it is not loaded (loading "
            f"could run code); it is not a checkpoint of this format (version {FORMAT_VERSION}): a checkpoint "
            f"written by an older version of bayesncl-pyro, or a foreign file") from None
    except Exception as exc:  # a truncated, corrupted or foreign file
        detail = clip(str(exc))
        raise CheckpointError(f"checkpoint {path} cannot be read: it is damaged (truncated or corrupted) or not a "
                              f"checkpoint ({detail})") from None
    if isinstance(envelope, dict) and "format" not in envelope and {"modules", "step"} <= set(envelope):
        raise CheckpointError(f"checkpoint {path} was written by an older version of bayesncl-pyro (format 1); "
                              f"this version reads format {FORMAT_VERSION}: continue it with the version that "
                              "wrote it, or train again")
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a bayesncl-pyro checkpoint (format version {FORMAT_VERSION})")
    if envelope.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {shown(envelope.get('format_version'))}; "
                              f"this code reads version {FORMAT_VERSION}")
    payload = envelope.get("payload")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its checksum does not match its contents")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"checkpoint {path} cannot be read: its state holds objects other than tensors and "
                              "plain data, so it is not loaded (loading could run code)") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__})") from None
    overlapping = _overlapping_tensor(state)
    if overlapping:
        raise CheckpointError(f"checkpoint {path} is damaged: {overlapping}")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state mapping")
    for name, kind in FIELDS.items():
        if name not in state:
            raise CheckpointError(f"checkpoint {path} is incomplete: it lacks the field {name!r} "
                                  f"(it has: {', '.join(map(str, state)) or 'nothing'})")
        if not isinstance(state[name], kind) or isinstance(state[name], bool):
            raise CheckpointError(f"checkpoint {path} is damaged: its field {name!r} is a "
                                  f"{type(state[name]).__name__}, not a {kind.__name__}")
    problem = _field_problem(state)
    if problem:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
    return state


def _overlapping_tensor(value: Any, where: str = "state", depth: int = 0) -> str | None:
    """The first tensor in ``value`` (nested dicts, lists, tuples) that claims more elements than
    its storage holds, in words, or None. Such a view (a stride-0 tensor of 3e9 elements over one
    stored number) costs nothing to load and gigabytes as soon as anything copies it; no tensor a
    checkpoint saves is one, so it is refused before anything touches it."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            return f"{where} is a {value.layout} tensor; allowed: dense tensors"
        stored = value.untyped_storage().nbytes() // max(value.element_size(), 1)
        if value.numel() > stored:
            return (f"{where} is a tensor of {value.numel():,} elements over a storage of {stored:,} (a view that "
                    "repeats its storage); allowed: tensors that hold their elements")
        return None
    if depth > 32:
        return f"{where} is nested more than 32 levels deep; allowed: the few levels a saved state has"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _overlapping_tensor(item, f"{where}[{key!r}]", depth + 1)
        if found:
            return found
    return None


def _field_problem(state: dict[str, Any]) -> str | None:
    """What is wrong inside the fields of a checkpoint state, or None: counters that are not
    whole numbers >= 0, module weights that are not name -> tensor mappings, an optimizer state
    without its two parts."""
    for name in ("step", "epoch"):
        if state[name] < 0:
            return f"its field {name!r} is {state[name]}; allowed: an integer >= 0"
    for name, weights in state["modules"].items():
        if not isinstance(weights, dict):
            return f"its weights of {shown(name)} are a {type(weights).__name__}, not a mapping of names to tensors"
        wrong = next((k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
        if wrong is not None:
            return (f"its weights of {shown(name)} hold {shown(wrong)}: a "
                    f"{type(weights[wrong]).__name__}, not a tensor")
    optimizer = state["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(optimizer.get("param_groups"), list):
        return "its optimizer state lacks 'state' (a mapping) or 'param_groups' (a list)"
    return None


def check_optimizer_fits(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """After ``optimizer.load_state_dict``: every per-parameter tensor of the loaded state (a
    momentum buffer, Adam's moments) has its parameter's shape. torch checks only the number of
    parameters, so a state of the wrong shape would fail at the first step, deep inside it."""
    for index, param in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        for key, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise CheckpointError(
                    f"checkpoint {path} does not fit this run: its optimizer's {key!r} of parameter {index} has "
                    f"shape {list(value.shape)}, the parameter {list(param.shape)}")


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
          dict: "a mapping", type(None): "nothing (None)"}


def check_state_types(saved: dict[str, Any], fresh: dict[str, Any], what: str, path: Path) -> None:
    """Refuse a saved state dict (a learning-rate schedule's) whose values have other types than
    those of a freshly built one: ``last_epoch="abc"`` would fail at the first step, deep inside."""
    for key, value in fresh.items():
        if key not in saved:
            continue
        expected = (int, float) if isinstance(value, float) else type(value)
        got = saved[key]
        if not isinstance(got, expected) or (isinstance(got, bool) and not isinstance(value, bool)):
            raise CheckpointError(f"checkpoint {path} is damaged: its {what}'s {key!r} is {shown(got, 40)} (a "
                                  f"{type(got).__name__}); allowed: {_KINDS.get(type(value), type(value).__name__)}")
        if isinstance(value, int) and not isinstance(value, bool) and key == "last_epoch" and got < 0:
            raise CheckpointError(f"checkpoint {path} is damaged: its {what}'s {key!r} is {got}; allowed: an integer >= 0")


def check_config(state: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint written for another configuration, listing the differing keys."""
    mismatches = config_mismatches(state.get("config") or {}, config)
    if mismatches:
        raise CheckpointError(f"checkpoint {path} was written for another configuration: " + "; ".join(mismatches))


def load(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint (:func:`read`) and check it belongs to a run of this config."""
    state = read(path)
    check_config(state, config, path)
    return state


def first_non_finite(tensors: dict[str, Any], prefix: str = "") -> str | None:
    """The name of the first floating-point tensor in a (nested) state dict that holds a NaN or
    an infinity, or None when all are finite."""
    for name, value in tensors.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            found = first_non_finite(value, key + ".")
            if found is not None:
                return found
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def modules_non_finite(modules: dict[str, torch.nn.Module]) -> str | None:
    """The first parameter or buffer (``net.backbone...``) of ``modules`` that is not finite."""
    return first_non_finite({name: module.state_dict() for name, module in modules.items()})


@dataclass
class ResumePoint:
    """Where a resumed run continues: the checkpoint ``path`` and its ``state`` (both None when
    the run has no checkpoint yet), and ``notes`` saying why it is not ``last.pt`` if so."""

    path: Path | None
    state: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def step(self) -> int:
        return 0 if self.state is None else int(self.state["step"])


def _damage(error: CheckpointError, path: Path) -> str:
    """A read error without the leading ``checkpoint PATH`` (the caller names the file)."""
    return str(error).removeprefix(f"checkpoint {path} ")


def read_finite(path: Path) -> dict[str, Any]:
    """:func:`read`, refusing a checkpoint whose weights hold a NaN or an infinity: training
    cannot continue from it, so it is no "good" checkpoint to resume."""
    state = read(path)
    bad = first_non_finite(state["modules"])
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} holds NaN or infinite values ({bad}), so training cannot "
                              "continue from it")
    return state


def newest_intact(run: Path) -> tuple[ResumePoint | None, list[str]]:
    """The newest ``epoch_NNNN.pt`` of ``run`` that reads back intact with finite weights (None if
    none does), and what is wrong with each newer one."""
    damaged = []
    for path in epoch_checkpoints(run):
        try:
            return ResumePoint(path, read_finite(path)), damaged
        except CheckpointError as error:
            damaged.append(f"{path.name} {_damage(error, path)}")
    return None, damaged


def resume_point(run: Path) -> ResumePoint:
    """The checkpoint a resume of ``run`` continues from: ``last.pt`` when it reads back intact
    with finite weights, else the newest intact ``epoch_NNNN.pt`` (the notes say so); no checkpoint at all is a
    ResumePoint of step 0. Raises CheckpointError when there are checkpoints but none is intact."""
    last = run / LAST_CHECKPOINT
    try:
        return ResumePoint(last, read_finite(last))
    except CheckpointError as error:
        problem = f"{last} is missing" if not last.exists() else f"{last} {_damage(error, last)}"
    fallback, damaged = newest_intact(run)
    if fallback is not None:
        skipped = f" ({'; '.join(damaged)})" if damaged else ""
        fallback.notes.append(f"{problem}; continuing from {fallback.path}, the newest intact checkpoint "
                              f"(step {fallback.step}){skipped}")
        return fallback
    if not last.exists() and not damaged:
        return ResumePoint(None, None, [f"{run} holds no checkpoint yet (the run stopped before its first one); "
                                        "starting it again from step 0"])
    others = f"; {'; '.join(damaged)}" if damaged else ""
    raise CheckpointError(f"{problem}{others}; no intact checkpoint is left to continue from: to start the run "
                          f"again from step 0, move the damaged checkpoint(s) out of {run} and --resume again")


def read_for_evaluation(run: Path, name: str = LAST_CHECKPOINT) -> tuple[Path, dict[str, Any]]:
    """Read checkpoint ``name`` of ``run``; when it is damaged, the error names the newest
    intact ``epoch_NNNN.pt`` (an evaluation never silently takes an older checkpoint)."""
    path = run / name
    try:
        return path, read(path)
    except CheckpointError as error:
        fallback, _ = newest_intact(run)
        if fallback is None or fallback.path == path:
            raise
        raise CheckpointError(f"{error}; the newest intact checkpoint is {fallback.path} (step {fallback.step}), "
                              f"which bayesncl-train --resume {run} would continue from") from None


def restore_modules(state: dict[str, Any], modules: dict[str, torch.nn.Module], path: Path) -> None:
    """Load each module's weights, turning a checkpoint that does not fit this code (renamed or
    reshaped parameters) into a CheckpointError that names what is missing or extra."""
    if not isinstance(state.get("modules"), dict):
        raise CheckpointError(f"checkpoint {path} holds no module weights")
    for name, module in modules.items():
        try:
            module.load_state_dict(state["modules"][name])
        except KeyError:
            raise CheckpointError(f"checkpoint {path} holds no weights for {name!r}; it has: "
                                  f"{', '.join(state['modules'])}") from None
        except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
            detail = clip(exc, 300)
            raise CheckpointError(f"checkpoint {path} does not fit this code's {name!r} ({detail})") from None


BACKBONE_PREFIX = "backbone."


def export_backbone(run: Path, out: Path) -> Path:
    """Write the backbone weights of the run in ``run`` (its intact ``last.pt``) as a plain state
    dict ``out``, the form ``model.weights`` reads: an encoder trained once, frozen in other runs."""
    run = Path(run).expanduser()
    path, state = read_for_evaluation(run)
    weights = state["modules"].get("net") or {}
    backbone = {key[len(BACKBONE_PREFIX):]: value for key, value in weights.items() if key.startswith(BACKBONE_PREFIX)}
    if not backbone:
        raise CheckpointError(f"checkpoint {path} holds no backbone weights (no {BACKBONE_PREFIX}* keys in 'net')")
    buffer = io.BytesIO()
    torch.save(backbone, buffer)
    return atomic_write_bytes(Path(out).expanduser(), buffer.getvalue())
