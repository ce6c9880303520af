"""The spurious-background variant of `scenes`: the background tied to the class at a chosen rate
in the training split only (rates checked by counting), deterministic and cached by every
option, and the evaluation's linear-probe top-1 apart on test images whose background agrees or
disagrees with the training pairing."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.data.scenes import BACKGROUND_NAMES, PAIRED_BACKGROUND, SHARED_BACKGROUND, make_scenes, scenes_splits
from bayesncl_pyro.data.sources import load_split
from bayesncl_pyro.evaluation.evaluate import background_pairing, background_pairing_line, evaluate_run
from bayesncl_pyro.experiments.suite_report import method_tables

from .conftest import ROOT, tiny_run

Z = 4.0
OTHER_TEXTURES = len(BACKGROUND_NAMES) - 1


def binomial_ok(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= Z * math.sqrt(n * p * (1 - p)) + 1e-9


def test_paired_background_map_is_fixed_and_never_the_shared_sky():
    assert PAIRED_BACKGROUND == (1, 2, 3, 4, 5, 1, 2, 3, 4, 5)
    assert SHARED_BACKGROUND not in PAIRED_BACKGROUND


@pytest.mark.parametrize("rate,shared_p", [(0.9, 0.7), (0.5, 0.7), (0.3, 0.0), (1.0, 0.7)])
def test_background_follows_the_class_at_the_chosen_rate(rate, shared_p):
    """P(background = paired) = r + (1 − r)(1 − shared_p)/5 (tied, or drawn as usual and landing
    on it), P(sky) = (1 − r) shared_p, for every class."""
    n = 6000
    data = make_scenes(n, seed=5, shared_p=shared_p, image_size=16, background_class_rate=rate)
    background, paired = data.factors["background"], data.factors["paired_background"]
    assert torch.equal(paired, torch.tensor(PAIRED_BACKGROUND)[data.labels])
    agree = rate + (1 - rate) * (1 - shared_p) / OTHER_TEXTURES
    assert binomial_ok(int((background == paired).sum()), n, agree)
    assert binomial_ok(int((background == SHARED_BACKGROUND).sum()), n, (1 - rate) * shared_p)
    for k in range(10):
        members = data.labels == k
        assert binomial_ok(int((background[members] == paired[members]).sum()), int(members.sum()), agree)


def test_pairing_changes_only_the_tied_backgrounds_and_is_deterministic():
    plain = make_scenes(600, seed=6, image_size=16)
    tied = make_scenes(600, seed=6, image_size=16, background_class_rate=0.8)
    assert "paired_background" not in plain.factors and torch.equal(tied.labels, plain.labels)
    for name in ("color", "x", "y", "scale", "rotation"):
        assert torch.equal(tied.factors[name], plain.factors[name]), name
    same = tied.factors["background"] == plain.factors["background"]
    assert torch.equal(tied.images[same], plain.images[same]) and not torch.equal(tied.images, plain.images)
    recorded = make_scenes(600, seed=6, image_size=16, background_class_rate=0.0)
    assert torch.equal(recorded.images, plain.images) and "paired_background" in recorded.factors
    assert torch.equal(make_scenes(600, seed=6, image_size=16, background_class_rate=0.8).images, tied.images)


def test_splits_tie_the_training_backgrounds_only():
    train, test = scenes_splits(num_train=3000, num_test=3000, seed=0, image_size=16, background_class_rate=0.9)
    shared_p = 0.7
    agree_train = int((train.factors["background"] == train.factors["paired_background"]).sum())
    agree_test = int((test.factors["background"] == test.factors["paired_background"]).sum())
    assert binomial_ok(agree_train, 3000, 0.9 + 0.1 * (1 - shared_p) / OTHER_TEXTURES)
    assert binomial_ok(agree_test, 3000, (1 - shared_p) / OTHER_TEXTURES)
    _, independent = scenes_splits(num_train=3000, num_test=3000, seed=0, image_size=16)
    assert torch.equal(test.images, independent.images) and "paired_background" not in independent.factors


def test_the_loaded_dataset_is_cached_by_the_rate(tiny_config):
    plain = load_split(tiny_config().data, "train")
    tied = load_split(tiny_config("data.scenes.background_class_rate=0.9").data, "train")
    assert not torch.equal(plain.factors["background"], tied.factors["background"])
    assert "paired_background" in tied.factors and "paired_background" not in plain.factors


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_rate_out_of_range_is_one_line_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "configs" / "scenes_quick.yaml", [f"data.scenes.background_class_rate={value}"])
    assert "data.scenes.background_class_rate" in str(error.value) and "[0, 1]" in str(error.value)
    assert "\n" not in str(error.value)


def test_agree_and_disagree_scores_count_by_hand():
    factors = {"background": torch.tensor([1, 2, 0, 1, 3, 0]), "paired_background": torch.tensor([1, 1, 2, 1, 3, 4])}
    labels = torch.tensor([0, 5, 1, 0, 2, 3])
    predictions = torch.tensor([0, 5, 0, 1, 2, 3])
    result = background_pairing(factors, labels, predictions, 0.9)
    # agrees: rows 0, 3, 4 (2 of 3 right); disagrees: rows 1, 2, 5 (2 of 3 right)
    assert result["test_agrees"] == 3 and result["test_disagrees"] == 3
    assert result["linear_top1_agrees"] == pytest.approx(200 / 3) and result["linear_top1_disagrees"] == pytest.approx(200 / 3)
    assert result["linear_top1_gap"] == pytest.approx(0.0)
    assert background_pairing({"background": labels}, labels, predictions, 0.0) is None
    assert "66.67 % (3 images)" in background_pairing_line(result)


def test_eval_of_a_spurious_run_reports_agree_and_disagree(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "spurious", "data.scenes.background_class_rate=0.9")
    result, _, md_path = evaluate_run(run, progress=False)
    pairing = result["background_pairing"]
    assert pairing["training_rate"] == 0.9
    assert pairing["test_agrees"] + pairing["test_disagrees"] == result["num_test"]
    assert pairing["test_agrees"] > 0 and pairing["test_disagrees"] > 0
    assert "Spurious backgrounds" in md_path.read_text()
    plain = evaluate_run(tiny_run(tmp_path_factory, "not_spurious"), progress=False)[0]
    assert plain["background_pairing"] is None


def test_suite_table_adds_the_agree_and_disagree_columns_where_there_is_a_pairing():
    spec = SimpleNamespace(datasets={"scenes": [], "cifar10": []}, methods={"ncl": []})
    rows = [{"name": "scenes/ncl/seed0", "dataset": "scenes", "method": "ncl", "seed": 0, "linear_top1": 50.0,
             "linear_converged": True, "linear_top1_agrees": 70.0, "linear_top1_disagrees": 45.0, "linear_top1_gap": 25.0},
            {"name": "cifar10/ncl/seed0", "dataset": "cifar10", "method": "ncl", "seed": 0, "linear_top1": 40.0,
             "linear_converged": True}]
    scenes, cifar = method_tables(spec, rows).split("### cifar10")
    assert "bg agrees" in scenes and "| 70.00 | 45.00 | 25.00 |" in scenes
    assert "bg agrees" not in cifar

