"""Random config overrides and random image tensors: a clean ConfigError/DataError or a correct
result, never a traceback from inside."""
from __future__ import annotations

import dataclasses
import typing

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesncl_pyro import Config, ConfigError, DataError, load_config
from bayesncl_pyro.config import AugmentConfig, validate
from bayesncl_pyro.data.augment import BatchAugment


def _dotted_keys(cls=Config, prefix=""):
    for name, kind in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(kind):
            yield from _dotted_keys(kind, f"{prefix}{name}.")
        else:
            yield prefix + name


KEYS = sorted(_dotted_keys())
values = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "", "none", "null", "[1, 2]", "{a: 1}", "relu", "ste", "cuda:1",
                     "cuda:x", "bernoulli", "scenes", "0.5", "1e-3", "-0", "~", "'quoted'"]),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=15), st.sampled_from(["gate", "data.scenes", "a.b.c", "."]))
overrides = st.lists(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=10),
                     max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides)
def test_config_overrides_error_cleanly_or_load(items):
    try:
        cfg = load_config(None, items)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(cfg, Config)
    assert validate(cfg) is cfg


AUGMENT = BatchAugment(AugmentConfig(), 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
dtypes = st.sampled_from([torch.uint8, torch.float32, torch.float64, torch.float16, torch.int64, torch.bool])
shapes = st.lists(st.integers(0, 9), min_size=1, max_size=5).map(tuple) | st.tuples(
    st.integers(1, 4), st.just(3), st.integers(1, 40), st.integers(1, 40))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes, dtypes, st.sampled_from(["unit", "wide", "nan", "bytes"]), st.integers(0, 2**31 - 1))
def test_augmentation_errors_cleanly_or_gives_a_correct_view(shape, dtype, kind, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    if kind == "wide":
        x = x * 600 - 300
    elif kind == "nan" and x.numel():
        x.view(-1)[0] = float("nan")
    elif kind == "bytes":
        x = x * 255
    x = x.to(dtype) if dtype is not torch.uint8 else x.clamp(0, 255).to(torch.uint8)
    try:
        out = AUGMENT(x)
    except DataError as exc:
        assert str(exc)
        return
    assert x.dim() == 4 and x.shape[1] == 3
    assert out.shape == (x.shape[0], 3, 16, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # normalised [0, 1] values stay within [(0 - 0.5)/0.25, (1 - 0.5)/0.25]
    assert out.min() >= -2 - 1e-4 and out.max() <= 2 + 1e-4
