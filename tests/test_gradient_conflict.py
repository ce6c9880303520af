"""The optimisation-conflict measurement: the split of the InfoNCE gradient into positive- and
negative-pair parts (against autograd of the project's InfoNCE and a brute-force loop over pairs),
the statistics on constructed cases whose answer is known, a run measured end to end (read only),
and the paired comparison across runs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bayesncl_pyro.evaluation.gradient_conflict import (GradientParts, conflict_statistics, gradient_parts,
                                                        group_means, measure_run)
from bayesncl_pyro.experiments import conflict_comparison as cc
from bayesncl_pyro.inference.contrastive import InfoNCE, gated_rows, two_view_ids

from .conftest import tiny_run

TAU = 0.2


def random_batch(pairs: int = 5, dims: int = 7, seed: int = 0, gated: bool = False):
    generator = torch.Generator().manual_seed(seed)
    z = torch.rand(2 * pairs, dims, generator=generator, dtype=torch.float64) + 0.05
    gate = (torch.rand(2 * pairs, dims, generator=generator) < 0.6).to(torch.float64) if gated else None
    if gate is not None:
        gate[:, 0] = 1.0  # no row is closed everywhere
    return z, two_view_ids(pairs), gate


@pytest.mark.parametrize("gated", [False, True])
def test_the_two_parts_add_up_to_the_gradient_of_the_loss(gated):
    z, ids, gate = random_batch(gated=gated)
    parts = gradient_parts(z, ids, TAU, gate)
    leaf = z.clone().requires_grad_(True)
    loss = InfoNCE(TAU)(gated_rows(leaf, gate), ids)
    full, = torch.autograd.grad(loss, leaf)
    assert torch.allclose(parts.total, full, atol=1e-6, rtol=0)
    assert parts.positive.abs().sum() > 0 and parts.negative.abs().sum() > 0
    if gated:  # a closed entry gets nothing from either part
        assert (parts.positive[gate == 0] == 0).all() and (parts.negative[gate == 0] == 0).all()


@pytest.mark.parametrize("gated", [False, True])
def test_the_split_matches_a_loop_over_pairs(gated):
    """Brute force: for every ordered pair (i, j), ∂L/∂S_ij in closed form from the softmax written
    out with math.exp, times the autograd gradient of that one similarity, added to the positive
    part when j is i's other view and to the negative part otherwise."""
    z, ids, gate = random_batch(pairs=3, dims=4, seed=1, gated=gated)
    rows_n = z.shape[0]
    leaf = z.clone().requires_grad_(True)
    rows = gated_rows(leaf, gate)
    s = (rows @ rows.T).detach()
    positive, negative = torch.zeros_like(z), torch.zeros_like(z)
    for i in range(rows_n):
        denominator = sum(math.exp(s[i, k] / TAU) for k in range(rows_n) if k != i)
        for j in range(rows_n):
            if j == i:
                continue
            w = math.exp(s[i, j] / TAU) / denominator
            is_partner = bool(ids[i] == ids[j])
            dl_ds = (w - (1.0 if is_partner else 0.0)) / (rows_n * TAU)
            grad_s, = torch.autograd.grad(rows[i] @ rows[j], leaf, retain_graph=True)
            if gate is not None:
                grad_s = grad_s * (gate != 0)
            (positive if is_partner else negative).add_(dl_ds * grad_s)
    parts = gradient_parts(z, ids, TAU, gate)
    assert torch.allclose(parts.positive, positive, atol=1e-12, rtol=0)
    assert torch.allclose(parts.negative, negative, atol=1e-12, rtol=0)


def constructed_batch(pairs: int = 6, noise_dims: int = 5, seed: int = 0):
    """Rows [c, a·one-hot(instance), r·u] of equal norm: dimension 0 is the same on every image (a
    shared background), dimensions 1..pairs each belong to one instance (both views have it, every
    negative lacks it: an object feature), the rest is view noise so that no two rows are equal."""
    generator = torch.Generator().manual_seed(seed)
    ids = two_view_ids(pairs)
    noise = torch.rand(2 * pairs, noise_dims, generator=generator, dtype=torch.float64) + 0.1
    noise = 0.8 * noise / noise.norm(dim=1, keepdim=True)
    z = torch.cat([torch.full((2 * pairs, 1), 0.7, dtype=torch.float64),
                   0.6 * torch.nn.functional.one_hot(ids, pairs).to(torch.float64), noise], dim=1)
    return z, ids, pairs


def test_a_dimension_shared_by_every_image_is_pulled_and_pushed_at_once():
    z, ids, pairs = constructed_batch()
    parts = gradient_parts(z, ids, TAU)
    assert (parts.positive[:, 0] < 0).all(), "the positive pairs pull the shared dimension up"
    assert (parts.negative[:, 0] > 0).all(), "the negative pairs push it down"
    stats = conflict_statistics([parts], [z > 0])
    assert stats["opposite"][0] == 1.0
    shared = 1 - (parts.total[:, 0].abs().sum() / (parts.positive[:, 0].abs() + parts.negative[:, 0].abs()).sum())
    assert stats["cancellation"][0] == pytest.approx(float(shared), abs=1e-12) and stats["cancellation"][0] > 0.1


def test_a_dimension_only_the_pair_shares_has_no_conflict():
    z, ids, pairs = constructed_batch()
    parts = gradient_parts(z, ids, TAU)
    owners = z[:, 1:1 + pairs] > 0
    pos, neg = parts.positive[:, 1:1 + pairs][owners], parts.negative[:, 1:1 + pairs][owners]
    assert (pos < 0).all() and (neg < 0).all(), "partner and negatives both raise the instance's own dimension"
    stats = conflict_statistics([parts], [z > 0])
    assert (stats["opposite"][1:1 + pairs] == 0).all()
    assert stats["active"][1:1 + pairs].tolist() == pytest.approx([2 / (2 * pairs)] * pairs) and stats["active"][0] == 1
    assert torch.allclose(stats["cancellation"][1:1 + pairs], torch.zeros(pairs, dtype=torch.float64), atol=1e-12)


def test_a_closed_gate_ends_the_conflict_of_the_shared_dimension():
    z, ids, pairs = constructed_batch()
    gate = torch.ones_like(z)
    gate[:, 0] = 0.0
    parts = gradient_parts(z, ids, TAU, gate)
    assert (parts.positive[:, 0] == 0).all() and (parts.negative[:, 0] == 0).all()
    stats = conflict_statistics([parts], [z > 0], [gate])
    assert stats["opposite"][0] == 0.0 and stats["open"][0] == 0.0
    assert math.isnan(stats["opposite_open"][0]) and math.isnan(stats["cancellation"][0])
    assert stats["open"][1] == 1.0


def test_batch_level_statistics_on_hand_made_parts():
    """Dimension 0: the parts are (−1, +0.5) in batch 1 and (−3, +1) in batch 2 (opposite signs,
    partly cancelling, the sum negative in both); dimension 1: (+2, 0) and (−2, 0), no conflict
    within a batch but its summed gradient flips sign between batches."""
    def parts(pos, neg):
        return GradientParts(torch.tensor([pos], dtype=torch.float64), torch.tensor([neg], dtype=torch.float64))

    batches = [parts([-1.0, 2.0], [0.5, 0.0]), parts([-3.0, -2.0], [1.0, 0.0])]
    live = [torch.ones(1, 2, dtype=torch.bool)] * 2
    stats = conflict_statistics(batches, live)
    assert stats["summed_cancellation"].tolist() == pytest.approx([(1 - 0.5 / 1.5 + 1 - 2 / 4) / 2, 0.0])
    assert stats["cancellation"].tolist() == pytest.approx([1 - 2.5 / 5.5, 0.0])
    assert stats["sign_disagreement"].tolist() == pytest.approx([0.0, 1.0])
    assert stats["opposite"].tolist() == pytest.approx([1.0, 0.0]) and stats["active"].tolist() == [1.0, 1.0]
    assert stats["pull"].tolist() == pytest.approx([2.0, 2.0]) and stats["push"].tolist() == pytest.approx([0.75, 0.0])


def test_group_means_average_over_the_dimensions_of_each_label():
    stats = {"opposite": torch.tensor([1.0, 0.0, 0.5, math.nan], dtype=torch.float64)}
    groups = group_means(stats, ["background", "class", "color", "background"])
    assert groups["background"] == {"dims": 2.0, "opposite": 1.0}
    assert groups["object"]["opposite"] == pytest.approx(0.25) and groups["class"]["opposite"] == 0.0


def test_a_run_is_measured_at_every_checkpoint_without_being_written(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "gated", "train.steps=0", "train.keep=2")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    result = measure_run(run, batches=2, batch_size=16)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert [c["epoch"] for c in result["checkpoints"]] == [0, 1, 2]
    assert result["method"] == "bayesncl_ste" and result["batch_size"] == 16
    last = result["checkpoints"][-1]
    assert len(last["dim_labels"]) == len(last["per_dimension"]["opposite"]) == 16
    json.dumps(result)
    again = measure_run(run, batches=2, batch_size=16)
    assert again["checkpoints"][-1]["per_dimension"] == last["per_dimension"], "fixed batches: same numbers"
    measured = []
    kept = measure_run(run, batches=2, batch_size=16, known=json.loads(json.dumps(result["checkpoints"])),
                       progress=lambda items: measured.extend(items) or items)
    assert measured == [] and kept["checkpoints"] == json.loads(json.dumps(result["checkpoints"]))
    (run / "epoch_0002.pt").touch()  # a rewritten checkpoint is measured again
    measure_run(run, batches=2, batch_size=16, known=result["checkpoints"],
                progress=lambda items: measured.extend(items) or items)
    assert [name for _, name, _ in measured] == ["epoch_0002.pt"]
    saved = []
    some = measure_run(run, batches=2, batch_size=16, epochs=[0, 2], measured_one=saved.append)
    assert [c["epoch"] for c in some["checkpoints"]] == [0, 2] and saved == some["checkpoints"]


def fake_result(method: str, seed: int, background: list[float], obj: list[float]) -> dict:
    checkpoints = [{"epoch": e, "groups": {"background": {"dims": 3.0, "opposite": b},
                                           "object": {"dims": 5.0, "opposite": o},
                                           "class": {"dims": 2.0, "opposite": o}},
                    "per_dimension": {"active": [0.9, 0.2, 0.5, None], "opposite": [b, o, (b + o) / 2, 0.3]}}
                   for e, (b, o) in enumerate(zip(background, obj))]
    return {"run": f"{method}/{seed}", "method": method, "seed": seed, "statistics": ["opposite"],
            "checkpoints": checkpoints}


def test_comparisons_pair_runs_by_seed():
    results = [fake_result("ncl", 0, [0.5, 0.8, 0.9], [0.5, 0.6, 0.6]),
               fake_result("ncl", 1, [0.5, 0.7, 0.8], [0.5, 0.6, 0.7]),
               fake_result("ste", 1, [0.5, 0.6, 0.6], [0.5, 0.6, 0.6]),
               fake_result("ste", 0, [0.5, 0.6, 0.7], [0.5, 0.6, 0.6])]
    rows = {(r["when"], r["comparison"]): r for r in cc.comparisons(results, "ste", "ncl", ["opposite"])}
    last = rows[("epoch 2", "ncl: background − object")]
    assert last["pairs"] == 2 and last["mean"] == pytest.approx((0.3 + 0.1) / 2)
    between = rows[("epoch 2", "background: ste − ncl")]
    assert between["seeds"] == [0, 1] and between["mean"] == pytest.approx(((0.7 - 0.9) + (0.6 - 0.8)) / 2)
    assert between["sd"] == pytest.approx(0.0, abs=1e-12)
    over = rows[("mean of epochs 1, 2", "(background − object): ste − ncl")]
    # per seed: mean over epochs 1, 2 of (b − o)_ste − (b − o)_ncl
    seed0 = ((0.0 + 0.1) - (0.2 + 0.3)) / 2
    seed1 = ((0.0 + 0.0) - (0.1 + 0.1)) / 2
    assert over["mean"] == pytest.approx((seed0 + seed1) / 2)
    shared = rows[("epoch 2", "ncl: ρ(active, opposite) across dims")]
    assert shared["mean"] == pytest.approx(1.0)  # background (most active) > mixed > object, in every seed
    with pytest.raises(ValueError, match="one per seed"):
        cc.by_method(results + [fake_result("ste", 0, [0.1] * 3, [0.1] * 3)])


def test_the_figure_and_table_are_drawn(tmp_path):
    results = [fake_result(m, s, [0.5 + 0.1 * s] * 3, [0.4] * 3) for m in ("ncl", "ste") for s in range(3)]
    path = cc.plot_conflict(results, "ste", "ncl", tmp_path / "conflict.png", statistics=["opposite"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = cc.markdown_table(cc.comparisons(results, "ste", "ncl", ["opposite"]))
    assert "| opposite | epoch 2 | ncl: background − object | +0.200 [" in table


def test_rank_correlation_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(3)
    x = torch.randint(0, 5, (40,), generator=generator).tolist()  # many ties
    y = (torch.tensor(x) + torch.randint(0, 4, (40,), generator=generator)).tolist()
    assert cc.rank_correlation(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert cc.rank_correlation([1, 2, 3, None, 4], [5, 6, 7, 0, 8]) == pytest.approx(1.0)
    assert cc.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(cc.rank_correlation([1, 1, 1], [1, 2, 3]))


def test_the_table_compares_how_shared_the_groups_are_without_a_self_correlation():
    results = []
    for method in ("ncl", "ste"):
        for seed, share in enumerate((0.3, 0.35, 0.4)):
            result = fake_result(method, seed, [0.5] * 3, [0.5] * 3)
            for checkpoint in result["checkpoints"]:
                checkpoint["groups"]["background"]["active"] = share
                checkpoint["groups"]["object"]["active"] = share + 0.1
            results.append(result)
    assert "active" in cc.TABLED
    rows = {(r["when"], r["comparison"]): r for r in cc.comparisons(results, "ste", "ncl", ["opposite", "active"])
            if r["statistic"] == "active"}
    assert rows[("epoch 2", "ncl: background − object")]["mean"] == pytest.approx(-0.1)
    assert not any("ρ(active, active)" in comparison for _, comparison in rows)
