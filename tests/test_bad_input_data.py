"""Hostile image files and hostile class counts: 16-bit images keep their brightness, images above
the pixel limit are refused from their header (naming the file) before anything is decoded, the
other PIL modes convert as PIL converts them; and the class-wise metrics and figures stay
sparse when there are as many classes as images."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.data import image_input
from bayesncl_pyro.data.image_input import MAX_PIXELS_ENV, decode_image_file, image_batches, max_image_pixels
from bayesncl_pyro.data.vision import load_imagefolder


def png_bytes(width: int, height: int, colour_type: int, bit_depth: int, rows: bytes | None) -> bytes:
    """A PNG written from its specification: IHDR, one IDAT of ``rows`` (each row led by filter
    byte 0; all-zero rows when None), IEND. Lets a test write 16-bit RGB, which PIL cannot, and a
    header that claims a size its data does not have."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    if rows is None:
        rows = bytes(height * (1 + width * channels * bit_depth // 8))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def rgb16_png(values: np.ndarray) -> bytes:
    """[H, W, 3] uint16 -> a 16-bit RGB PNG."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    return png_bytes(width, height, 2, 16, rows)


SIXTEEN = np.array([[0, 255, 256, 32768], [32767, 40000, 65280, 65535]], dtype=np.uint16)
"""16-bit values and their 8-bit reading, ``v >> 8``: mid-grey 32768 is 128, not 0 (wrap-around)
nor 255 (PIL's clip)."""
EIGHT = (SIXTEEN >> 8).astype(np.uint8)


# --- 16-bit images -----------------------------------------------------------------------------------


def test_a_16_bit_rgb_png_keeps_its_top_8_bits(tmp_path):
    values = np.stack([SIXTEEN, SIXTEEN[::-1], 65535 - SIXTEEN], axis=-1)
    path = tmp_path / "rgb16.png"
    path.write_bytes(rgb16_png(values))
    decoded = decode_image_file(path)
    assert decoded.dtype == torch.uint8
    assert decoded.permute(1, 2, 0).numpy().tolist() == (values >> 8).astype(np.uint8).tolist()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_grey_image_keeps_its_top_8_bits(tmp_path, suffix):
    path = tmp_path / f"grey16{suffix}"
    Image.fromarray(SIXTEEN).save(path)
    assert Image.open(path).mode == "I;16"
    decoded = decode_image_file(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 2, 4)
    for channel in decoded:
        assert channel.numpy().tolist() == EIGHT.tolist()


def test_a_32_bit_integer_image_is_read_as_16_bit_values(tmp_path):
    path = tmp_path / "grey32.tif"
    values = SIXTEEN.astype(np.int32)
    values[0, 0] = -5  # outside 0..65535: clipped
    values[0, 1] = 70000
    Image.fromarray(values, "I").save(path)
    assert Image.open(path).mode == "I"
    decoded = decode_image_file(path)[0].numpy()
    expected = EIGHT.copy()
    expected[0, 0], expected[0, 1] = 0, 255
    assert decoded.tolist() == expected.tolist()


def test_a_16_bit_pil_image_given_to_the_network_is_scaled_too():
    image = Image.fromarray(SIXTEEN)
    (batch,) = image_batches(image)
    assert batch.shape == (1, 3, 2, 4) and batch[0, 1].numpy().tolist() == EIGHT.tolist()


def test_a_float_image_has_no_fixed_range_and_is_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((3, 3), 0.5, dtype=np.float32), "F").save(path)
    with pytest.raises(DataError, match="float image .* not allowed; allowed: 8- or 16-bit"):
        decode_image_file(path)


def test_a_16_bit_imagefolder_tree_loads_with_its_brightness(tmp_path):
    for name in ("a", "b"):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(SIXTEEN).save(folder / f"{k}.png")
        (folder / "rgb.png").write_bytes(rgb16_png(np.stack([SIXTEEN] * 3, axis=-1)))
    data = load_imagefolder(str(tmp_path), "train", cache_dir=str(tmp_path / "cache"))
    assert data.images.shape == (6, 3, 2, 4)
    for image in data.images:
        assert image[2].numpy().tolist() == EIGHT.tolist()  # 32768 -> 128, never 0


# --- the other PIL modes ----------------------------------------------------------------------------


def _write(path: Path, kind: str, pixels: np.ndarray) -> None:
    image = Image.fromarray(pixels)
    if kind == "palette with transparency":
        image.convert("P").save(path, transparency=0)
    elif kind == "grey + alpha":
        image.convert("LA").save(path)
    elif kind == "cmyk jpeg":
        image.convert("CMYK").save(path, quality=95)
    elif kind == "rgba":
        image.convert("RGBA").save(path)
    elif kind == "bilevel":
        image.convert("1").save(path)
    else:
        image.save(path)


@pytest.mark.parametrize("kind,name", [("palette with transparency", "p.png"), ("grey + alpha", "la.png"),
                                       ("cmyk jpeg", "cmyk.jpg"), ("rgba", "rgba.png"), ("bilevel", "bw.png"),
                                       ("bmp", "x.bmp"), ("tiff", "x.tif"), ("webp", "x.webp")])
def test_other_modes_convert_as_pil_converts_them(tmp_path, kind, name):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    path = tmp_path / name
    _write(path, kind, pixels)
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB"))
    decoded = decode_image_file(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 12, 10)
    # torchvision's decoders and PIL's may round a JPEG or WebP differently by a level or two
    tolerance = 2 if name.endswith((".jpg", ".webp")) else 0
    assert np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - expected.astype(int)).max() <= tolerance


# --- the pixel limit ---------------------------------------------------------------------------------


def forbid_decoding(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("an image above the pixel limit was decoded")

    monkeypatch.setattr(image_input, "decode_image", fail)
    monkeypatch.setattr(image_input, "pil_to_rgb", fail)


@pytest.mark.parametrize("side", [20_000, 40_000])
def test_a_huge_png_is_refused_from_its_header(tmp_path, monkeypatch, side):
    """The hostile files: a 20000x20000 PNG (1.2 GB decoded) and a 40000x40000 one (4.8 GB): here
    only their header is real (a few rows of data), and the decoder is never reached."""
    path = tmp_path / f"huge{side}.png"
    path.write_bytes(png_bytes(side, side, 2, 8, bytes(3 * (1 + 3 * side))))
    forbid_decoding(monkeypatch)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".* too large.*" + MAX_PIXELS_ENV):
        decode_image_file(path)


def test_the_limit_is_checked_on_width_times_height_and_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(path)
    assert decode_image_file(path, max_pixels=600).shape == (3, 20, 30)
    forbid_decoding(monkeypatch)
    with pytest.raises(DataError, match=re.escape(f"{path} is 30x20 = 600 pixels, above the limit of 599")):
        decode_image_file(path, max_pixels=599)


def test_the_limit_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(path)
    assert max_image_pixels() == image_input.DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv(MAX_PIXELS_ENV, "399")
    with pytest.raises(DataError, match="above the limit of 399"):
        decode_image_file(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "400")
    assert decode_image_file(path).shape == (3, 20, 20)
    for bad in ("abc", "0", "-3", "1.5"):
        monkeypatch.setenv(MAX_PIXELS_ENV, bad)
        with pytest.raises(DataError, match=f"{MAX_PIXELS_ENV}='{re.escape(bad)}' is not allowed; allowed: a whole"):
            max_image_pixels()


def test_the_loader_names_an_image_above_the_limit_or_skips_it(tmp_path, monkeypatch):
    for name in ("a", "b"):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * k, dtype=np.uint8)).save(folder / f"{k}.png")
    big = tmp_path / "train" / "b" / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(big)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(DataError, match=re.escape(str(big)) + ".*above the limit of 1,000"):
        load_imagefolder(str(tmp_path), "train", cache_dir=str(tmp_path / "cache"), image_size=8)
    with pytest.warns(UserWarning, match=re.escape(str(big))):
        data = load_imagefolder(str(tmp_path), "train", cache_dir=str(tmp_path / "cache"), image_size=8,
                                skip_corrupt=True)
    assert data.images.shape == (4, 3, 8, 8) and data.labels.tolist() == [0, 0, 1, 1]


# --- downsizing a large JPEG -------------------------------------------------------------------------


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_close_to_the_full_decode(tmp_path, monkeypatch):
    """PIL's draft decodes 1/8 of each side here; against the full decode + the same antialiased
    resize, a smooth image differs by a few levels at most."""
    y, x = np.mgrid[0:256, 0:320]
    pixels = np.stack([x * 255 // 319, y * 255 // 255, (x + y) * 255 // 574], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    full = decode_image_file(path)
    reference = image_input._resized(full, 32)
    drafted = []
    original = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):
        result = original(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    small = decode_image_file(path, size=32)
    assert drafted == [(40, 32)]  # 320x256 decoded at 1/8: the smallest scale with no side below 32
    assert small.shape == (3, 32, 32) and small.dtype == torch.uint8
    assert (small.int() - reference.int()).abs().float().mean() < 2.0
    assert (small.int() - reference.int()).abs().max() <= 8


# --- as many classes as images: the probe, the metrics, the gate posterior ------------------------

from bayesncl_pyro.evaluation import gate_posterior, linear_probe, metrics  # noqa: E402
from bayesncl_pyro.evaluation.linear_probe import (  # noqa: E402
    WEIGHT_DECAYS, fit_linear_probe, objective_and_gradient, probe_objective, select_linear_probe, topk_accuracy)


def one_image_per_class(classes: int, dims: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(classes, dims, generator=g, dtype=torch.float64), torch.arange(classes)


def test_the_chunked_probe_objective_and_gradient_match_the_dense_form(monkeypatch):
    x, labels = one_image_per_class(37, 6)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(37, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(37, generator=g, dtype=torch.float64, requires_grad=True)
    dense = probe_objective(weight, bias, x, labels, 0.03)
    dense_w, dense_b = torch.autograd.grad(dense, [weight, bias])
    dense = dense.detach()
    monkeypatch.setattr(linear_probe, "LOGIT_CHUNK_ENTRIES", 37 * 5)  # chunks of 5 rows, the last of 2
    loss, grad_w, grad_b = objective_and_gradient(weight, bias, x, labels, 0.03)
    assert float(loss) == pytest.approx(dense.item(), rel=1e-12)
    torch.testing.assert_close(grad_w, dense_w, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad_b, dense_b, rtol=1e-12, atol=1e-15)


def test_the_chunked_test_scores_match_the_dense_logits(monkeypatch):
    h, labels = one_image_per_class(50, 5, seed=2)
    probe = fit_linear_probe(h, labels, 50, max_iter=20)
    test = h + 0.3 * torch.randn(50, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    logits = probe.logits(test)
    monkeypatch.setattr(linear_probe, "LOGIT_CHUNK_ENTRIES", 50 * 7)
    top1, top5, predictions = probe.scores(test, labels, 5)
    assert top1 == pytest.approx(topk_accuracy(logits, labels, 1), abs=1e-9)
    assert top5 == pytest.approx(topk_accuracy(logits, labels, 5), abs=1e-9)
    assert predictions.tolist() == logits.argmax(1).tolist()


def test_one_image_per_class_fits_the_largest_decay_once_without_the_grid():
    """Without a validation split nothing can choose a decay: the grid's six fits were thrown away
    (the largest decay was taken anyway), so only the refit runs, to the same optimum as a
    direct fit with that decay."""
    h, labels = one_image_per_class(30, 8, seed=4)
    selection = select_linear_probe(h, labels, 30)
    assert selection.validation == [] and selection.num_validation == 0
    assert selection.probe.weight_decay == max(WEIGHT_DECAYS) and selection.probe.converged
    direct = fit_linear_probe(h, labels, 30, weight_decay=max(WEIGHT_DECAYS))
    torch.testing.assert_close(selection.probe.weight, direct.weight, rtol=0, atol=1e-5)


def brute_force_counts(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[C, D] active counts, one class and one dimension at a time."""
    f = torch.nn.functional.normalize(features.double(), dim=1)
    classes = labels.unique()
    return torch.tensor([[float(((f[labels == c, d].abs() > metrics.ACTIVITY_THRESHOLD)).sum())
                          for d in range(f.shape[1])] for c in classes], dtype=torch.float64)


def test_class_metrics_at_one_image_per_class_match_a_brute_force_count():
    g = torch.Generator().manual_seed(5)
    features = torch.rand(300, 12, generator=g) * (torch.rand(300, 12, generator=g) > 0.6)
    labels = torch.arange(300)
    counts = brute_force_counts(features, labels)
    support = counts.sum(0)
    kept = support > 0
    expected_sc = float((counts.max(0).values[kept] / support[kept]).mean() * 100)
    assert metrics.semantic_consistency(features, labels) == pytest.approx(expected_sc, rel=1e-12)
    p = counts[:, kept] / support[kept]
    expected_entropy = float(-(torch.special.xlogy(p, p)).sum(0).mean())  # log(support) per dimension
    assert metrics.semantic_entropy_frequency(features, labels) == pytest.approx(expected_entropy, rel=1e-12)


def test_class_open_rate_keeps_fewer_draws_when_classes_times_dims_is_large(monkeypatch):
    g = torch.Generator().manual_seed(6)
    probs, labels = torch.rand(60, 4, generator=g), torch.arange(60) % 30
    rates, full = gate_posterior.open_rate_draws(probs, labels, 30, draws=10, chains=2, seed=3)
    assert full.shape == (2, 10, 30, 4)
    monkeypatch.setattr(gate_posterior, "CLASS_DRAW_ENTRIES", 2 * 30 * 4 * 3 + 5)  # room for 3 draws a chain
    assert gate_posterior.class_draws(10, 2, 30, 4) == 3
    same_rates, kept = gate_posterior.open_rate_draws(probs, labels, 30, draws=10, chains=2, seed=3)
    torch.testing.assert_close(same_rates, rates)
    assert kept.shape == (2, 3, 30, 4)
    torch.testing.assert_close(kept, full[:, :3])  # the first draws of each chain, unchanged
    idata = gate_posterior.gate_inference_data(rates, kept, probs, labels, [f"c{i}" for i in range(30)])
    assert "class_open_rate" not in idata.posterior and "open_rate" in idata.posterior
    assert idata.class_posterior["class_open_rate"].shape == (2, 3, 30, 4)
    assert "first 3 of the 10 draws" in idata.class_posterior.attrs["draws"]
    from bayesncl_pyro.browser.posterior_source import read_draws

    draws = read_draws(idata)
    assert draws is not None and draws.fits(None, 4, 30, 60)  # the browser still finds it


def test_class_means_and_the_heatmap_classes_match_a_brute_force_reference():
    g = torch.Generator().manual_seed(7)
    values, labels = torch.rand(200, 6, generator=g), torch.randint(0, 90, (200,), generator=g)
    means = gate_posterior.class_mean_rows(values, labels, 92)  # classes 90, 91 have no image
    for c in range(92):
        rows = values[labels == c].double()
        if len(rows):
            torch.testing.assert_close(means[c], rows.mean(0), rtol=1e-12, atol=1e-12)
        else:
            assert torch.isnan(means[c]).all()
    filled = means.nan_to_num(0.0)
    shown = gate_posterior.heatmap_classes(filled, 4)
    owners = filled.argmax(0).tolist()
    ranked = sorted(range(92), key=lambda c: (-owners.count(c), -float(filled[c].mean()), c))
    assert shown.tolist() == sorted(ranked[:4])
    assert gate_posterior.heatmap_classes(filled, 92).tolist() == list(range(92))


def test_the_class_heatmap_of_many_classes_shows_a_capped_number_of_rows_and_says_so(tmp_path, monkeypatch):
    classes = 120
    g = torch.Generator().manual_seed(8)
    probs = torch.rand(classes, 16, generator=g)
    test = {"gate_probs": probs, "gate": (probs > 0.5).float(), "z": probs, "gated": probs * (probs > 0.5),
            "labels": torch.arange(classes)}
    seen = {}

    def heatmap(matrix, class_names, dim_labels, groups, path, title, colorbar_label):
        seen.update(rows=matrix.shape[0], names=list(class_names), title=title, groups=groups)
        return Path(path)

    monkeypatch.setattr(gate_posterior.plots, "plot_class_heatmap", heatmap)
    gate_posterior.draw_figures(test, {"open_rate": torch.rand(1, 5, 16)},
                                torch.zeros(classes, 3, 4, 4, dtype=torch.uint8),
                                [f"c{i}" for i in range(classes)], tmp_path, 2, 2)
    cap = gate_posterior.HEATMAP_MAX_CLASSES
    assert seen["rows"] == cap and len(seen["names"]) == cap
    assert f"the {cap} of {classes} classes" in seen["title"]
    assert max(seen["groups"]) < cap  # every group is a row that is shown
