"""Tests of jaxvae.data.dsprites: the published factor grid, the index <-> factor mapping, the rendered geometry
(areas, positions, symmetries) against closed forms and an independent full-frame rasterizer, determinism, the
checksummed cache, the GroundTruthData for the metrics, and loading through the CLI's path. Only the small
variant is generated in the default tier; the full 737,280-image grid is generated in the slow tier."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os

import jax
import numpy as np
import pytest

from jaxvae import cli, config, runs
from jaxvae.data import DATASETS, Dataset, dsprites, find_data_dir, load_dataset
from jaxvae.data.dsprites import FACTOR_NAMES, SHAPES, VARIANTS, DSpritesData, generate_grid, load_grid, render
from jaxvae.errors import DataError
from jaxvae.evaluation import disentanglement

FULL, SMALL = VARIANTS["dsprites"], VARIANTS["dsprites-small"]
SQUARE, ELLIPSE, HEART = range(3)
PUBLISHED_MEAN_PIXEL = 0.042494423521889584  # mean of the published imgs array (dSprites loaders' mu_dsprites)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private HOME and cache and no data folder from the environment."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("JAXVAE_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def small_grid():
    return generate_grid("dsprites-small")


def counting_generator(monkeypatch):
    """Counts the grid generations that follow (the cache's misses)."""
    calls = []
    real = dsprites.generate_grid

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(dsprites, "generate_grid", counted)
    return calls


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    """``[N, 2]`` (row, column) centres of mass of ``[N, S, S]`` images, in pixel units (pixel centres at +0.5)."""
    size = images.shape[-1]
    centres = np.arange(size) + 0.5
    mass = images.sum(axis=(1, 2)).astype(np.float64)
    return np.stack([(images.sum(axis=2) @ centres) / mass, (images.sum(axis=1) @ centres) / mass], axis=1)


def reference_image(shape: int, scale: float, theta: float, pos_x: float, pos_y: float, size: int) -> np.ndarray:
    """The documented geometry rasterized over the full frame, written independently of the module."""
    width = 0.328 * size * scale
    cx, cy = size * (0.25 + 0.5 * pos_x), size * (0.25 + 0.5 * pos_y)
    x = (np.arange(size) + 0.5)[None, :] - cx  # right
    y = cy - (np.arange(size) + 0.5)[:, None]  # up
    u, v = x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta)
    if shape == SQUARE:
        return (np.abs(u) <= width / 2) & (np.abs(v) <= width / 2)
    if shape == ELLIPSE:
        return (u / (width / 2)) ** 2 + (v / (width / 4)) ** 2 <= 1
    side = width / (1 + 1 / math.sqrt(2))  # a turned square of side `side`, two discs of diameter `side` on top
    half = side / math.sqrt(2)

    def heart(p, q):  # (p, q) relative to the turned square's centre
        return (np.abs(p) + np.abs(q) <= half) | ((np.abs(p) - half / 2) ** 2 + (q - half / 2) ** 2 <= side**2 / 4)

    fine = np.linspace(-2 * half, 2 * half, 1601)
    q = np.broadcast_to(fine[:, None], (fine.size, fine.size))
    lift = q[heart(fine[None, :], q)].mean()  # the centroid's height above the square's centre, numerically
    return heart(u, v + lift)


# ---------------------------------------------------------------------------------------------- the factor grid


def test_factor_grid_and_image_count_are_the_published_ones():
    assert FACTOR_NAMES == ("color", "shape", "scale", "orientation", "posX", "posY")
    assert SHAPES == ("square", "ellipse", "heart")
    assert FULL.factor_sizes == (1, 3, 6, 40, 32, 32) and FULL.num_images == 737_280
    color, shape, scale, orientation, pos_x, pos_y = FULL.factor_values
    np.testing.assert_array_equal(color, [1.0])
    np.testing.assert_array_equal(shape, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(scale, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.diff(orientation), 2 * np.pi / 39, rtol=1e-12)
    assert orientation[0] == 0 and orientation[-1] == 2 * np.pi  # both ends, as published (issue 7)
    np.testing.assert_allclose(pos_x, np.arange(32) / 31, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(pos_x, pos_y)
    assert FULL.event_shape == (64, 64, 1)

    assert SMALL.factor_sizes == (1, 3, 6, 10, 16, 16) and SMALL.num_images == 46_080
    assert SMALL.event_shape == (32, 32, 1)
    for small, full, keep in zip(SMALL.factor_values, FULL.factor_values,
                                 ([0], [0, 1, 2], range(6), range(0, 40, 4), range(0, 32, 2), range(0, 32, 2))):
        np.testing.assert_array_equal(small, full[list(keep)])  # a subset of the published values
    for variant in (FULL, SMALL):
        spec = DATASETS[variant.name]
        assert spec.factor_names == FACTOR_NAMES and spec.factor_sizes == variant.factor_sizes
        assert spec.event_shape == variant.event_shape and spec.max_value == 1


def test_index_and_factor_classes_round_trip_in_row_major_order():
    every = np.array(list(itertools.product(*map(range, SMALL.factor_sizes))))  # posY fastest, as published
    np.testing.assert_array_equal(SMALL.factors(np.arange(SMALL.num_images)), every)
    np.testing.assert_array_equal(SMALL.index(every), np.arange(SMALL.num_images))

    index = np.random.default_rng(0).integers(0, FULL.num_images, 5000)
    np.testing.assert_array_equal(FULL.index(FULL.factors(index)), index)
    np.testing.assert_array_equal(FULL.factors([0, 1, 32, 1024, 40_960, 245_760, 737_279]),
                                  [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0],
                                   [0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 2, 5, 39, 31, 31]])
    values = FULL.values(FULL.factors([737_279]))
    np.testing.assert_allclose(values, [[1.0, 3.0, 1.0, 2 * np.pi, 1.0, 1.0]])

    with pytest.raises(DataError, match=r"indices must lie in \[0, 737279\]"):
        FULL.factors([737_280])
    with pytest.raises(DataError, match=r"outside 0\.\.size-1"):
        FULL.index(np.array([[0, 3, 0, 0, 0, 0]]))
    with pytest.raises(DataError, match=r"integer classes \[N, 6\]"):
        FULL.index(np.zeros((2, 5), np.int64))


# -------------------------------------------------------------------------------------------------- rendering


def test_images_are_binary_with_the_documented_shape(small_grid):
    assert small_grid.dtype == np.uint8 and small_grid.shape == (46_080, 32, 32, 1)
    assert set(np.unique(small_grid)) == {0, 1}
    rng = np.random.default_rng(1)
    full = FULL.render(FULL.factors(rng.integers(0, FULL.num_images, 500)))
    assert full.dtype == np.uint8 and full.shape == (500, 64, 64, 1) and set(np.unique(full)) == {0, 1}
    for images in (small_grid, full):
        assert images.reshape(len(images), -1).sum(axis=1).min() > 0  # every sprite is visible
        border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
        assert not border.any()  # and lies wholly inside the image


def test_windowed_rendering_matches_an_independent_full_frame_rasterizer():
    rng = np.random.default_rng(2)
    rows = FULL.factors(rng.integers(0, FULL.num_images, 60))
    rows[:6, 2] = 5  # the largest scale at the extreme positions
    rows[:6, 4:] = [[0, 0], [31, 31], [0, 31], [31, 0], [0, 15], [31, 16]]
    for variant, factors in ((FULL, rows), (SMALL, SMALL.factors(rng.integers(0, SMALL.num_images, 30)))):
        images = variant.render(factors)[..., 0]
        values = variant.values(factors)
        for image, (_, shape, scale, theta, pos_x, pos_y) in zip(images, values):
            expected = reference_image(int(shape) - 1, scale, theta, pos_x, pos_y, variant.image_size)
            assert np.sum(image != expected) <= 2, (variant.name, shape, scale, theta, pos_x, pos_y)


def test_areas_are_ordered_and_grow_with_the_square_of_the_scale():
    thetas = FULL.factor_values[3][:39]  # every distinct orientation
    scales = FULL.factor_values[2]
    width = 0.328 * 64
    closed_form = np.array([1.0, math.pi / 8, (1 + math.pi / 4) / (1 + 1 / math.sqrt(2)) ** 2])  # [shape] / w^2
    area = np.empty((3, len(scales)))
    for s, k in itertools.product(range(3), range(len(scales))):
        images = render(np.full(thetas.size, s), scales[k], thetas, 0.5, 0.5)
        area[s, k] = images.reshape(thetas.size, -1).sum(axis=1).mean()  # pixels, averaged over orientations
    np.testing.assert_allclose(area, closed_form[:, None] * (width * scales[None, :]) ** 2, rtol=0.02)
    assert np.all(area[SQUARE] > area[HEART]) and np.all(area[HEART] > area[ELLIPSE])
    np.testing.assert_allclose(area / area[:, -1:], np.broadcast_to(scales**2, area.shape), rtol=0.025)


def test_centre_of_mass_moves_linearly_over_the_middle_half_of_the_image():
    positions = FULL.factor_values[4]
    for shape, scale, orientation in itertools.product(range(3), (0, 5), (0, 7, 23)):
        along_x = np.array([[0, shape, scale, orientation, i, 10] for i in range(32)])
        along_y = np.array([[0, shape, scale, orientation, 20, i] for i in range(32)])
        com_x = centre_of_mass(FULL.render(along_x)[..., 0])
        com_y = centre_of_mass(FULL.render(along_y)[..., 0])
        expected = 64 * (0.25 + 0.5 * positions)  # 16 .. 48 pixels
        # within rasterization error: half a pixel for an axis-aligned square (its mass moves in whole pixels)
        for com, moving, still in ((com_x, 1, expected[10]), (com_y, 0, expected[20])):
            error = com[:, moving] - expected  # columns follow posX, rows follow posY (downwards)
            assert np.abs(error).max() <= 0.5 and np.abs(error).mean() < 0.25, (shape, scale, orientation)
            assert np.abs(com[:, 1 - moving] - still).max() <= 0.5  # the other coordinate stays
            slope, intercept = np.polyfit(positions, com[:, moving], 1)
            tolerance = 1.0 if (shape, orientation) == (SQUARE, 0) else 0.3  # the square's steps are whole pixels
            assert abs(slope - 32) < tolerance and abs(intercept - 16) < tolerance / 2
    small = centre_of_mass(SMALL.render(np.array([[0, HEART, 5, 3, i, 8] for i in range(16)]))[..., 0])
    np.testing.assert_allclose(small[:, 1], 32 * (0.25 + 0.5 * SMALL.factor_values[4]), atol=0.5)


def test_rotation_symmetries_of_the_square_and_ellipse_and_none_for_the_heart():
    def differ(shape, turn, scale):
        """Pixels that differ between each orientation and its turn by `turn`, and the sprite's pixel count."""
        thetas = FULL.factor_values[3]
        a = render(np.full(thetas.size, shape), scale, thetas, 0.4, 0.6)
        b = render(np.full(thetas.size, shape), scale, thetas + turn, 0.4, 0.6)
        return np.sum(a != b, axis=(1, 2)), a.sum(axis=(1, 2))  # [40], [40]

    for scale in (0.5, 1.0):
        for shape, turn in ((SQUARE, np.pi / 2), (ELLIPSE, np.pi), (SQUARE, 2 * np.pi), (HEART, 2 * np.pi)):
            assert differ(shape, turn, scale)[0].max() <= 2, (shape, turn, scale)  # symmetric: the same image
        # no symmetry: the heart's point flips over; a square's eighth turn, an ellipse's quarter turn
        for shape, turn in ((HEART, np.pi), (HEART, np.pi / 2), (SQUARE, np.pi / 4), (ELLIPSE, np.pi / 2)):
            changed, area = differ(shape, turn, scale)
            assert np.all(changed > 0.15 * area), (shape, turn, scale)
    # As in the published data, orientation 39 (2 pi) repeats orientation 0 exactly.
    first = np.array([[0, s, k, 0, 5, 9] for s in range(3) for k in range(6)])
    last = first.copy()
    last[:, 3] = 39
    np.testing.assert_array_equal(FULL.render(first), FULL.render(last))


def test_mean_pixel_matches_the_published_dsprites(small_grid):
    index = np.random.default_rng(3).integers(0, FULL.num_images, 4000)
    sample = FULL.render(FULL.factors(index))
    assert abs(sample.mean() / PUBLISHED_MEAN_PIXEL - 1) < 0.03
    assert abs(small_grid.mean() / PUBLISHED_MEAN_PIXEL - 1) < 0.03


def test_generation_is_deterministic_and_does_not_depend_on_chunking(small_grid):
    again = generate_grid("dsprites-small", chunk_size=333)  # other windows per chunk, same pixels
    assert again.tobytes() == small_grid.tobytes()
    assert hashlib.sha256(again.tobytes()).digest() == hashlib.sha256(generate_grid(SMALL).tobytes()).digest()


def test_render_rejects_bad_factor_values():
    with pytest.raises(DataError, match=r"integer classes 0\.\.2"):
        render(np.array([3]), 1.0, 0.0, 0.5, 0.5)
    with pytest.raises(DataError, match="positive and finite"):
        render(np.array([0]), 0.0, 0.0, 0.5, 0.5)
    with pytest.raises(DataError, match="finite"):
        render(np.array([0]), 1.0, np.nan, 0.5, 0.5)
    with pytest.raises(DataError, match="Unknown dSprites variant"):
        generate_grid("dsprites-tiny")


# ------------------------------------------------------------------------------------------------------- cache


def test_cache_hit_reloads_the_same_bytes(tmp_path, monkeypatch, small_grid):
    images, path = load_grid("dsprites-small", tmp_path / "cache")
    assert images.tobytes() == small_grid.tobytes()
    assert path == tmp_path / "cache" / "dsprites-small-v1-32x32.npy" and path.is_file()
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["params"]["factor_sizes"] == [1, 3, 6, 10, 16, 16]
    packed = np.load(path, allow_pickle=False)
    assert packed.dtype == np.uint8 and packed.shape == (46_080, 128)  # 32 * 32 bits per image
    assert not list((tmp_path / "cache").glob(".*.part"))  # the atomic writes left no temporary file

    calls = counting_generator(monkeypatch)
    again, same = load_grid("dsprites-small", tmp_path / "cache")
    assert calls == [] and same == path and again.tobytes() == small_grid.tobytes()
    shared, where = load_grid("dsprites-small", tmp_path / "elsewhere", search=[tmp_path / "cache"])
    assert calls == [] and where == path and shared.tobytes() == small_grid.tobytes()
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "other_params", "no_manifest", "bad_json"])
def test_a_corrupt_or_stale_cache_is_detected_and_regenerated(tmp_path, monkeypatch, caplog, small_grid, damage):
    _, path = load_grid("dsprites-small", tmp_path)
    manifest = path.with_suffix(".json")
    if damage == "flip_byte":
        data = bytearray(path.read_bytes())
        data[-1000] ^= 0x10
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:4096])
    elif damage == "other_params":
        record = json.loads(manifest.read_text())
        record["params"]["sprite_width"] = 0.3
        manifest.write_text(json.dumps(record))
    elif damage == "no_manifest":
        manifest.unlink()
    else:
        manifest.write_text("{not json")
    calls = counting_generator(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="jaxvae.data.dsprites"):
        images, again = load_grid("dsprites-small", tmp_path)
    assert len(calls) == 1 and "generating the images again" in caplog.text
    assert again == path and images.tobytes() == small_grid.tobytes()
    assert json.loads(manifest.read_text())["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ ground-truth data


def test_ground_truth_data_renders_the_grid_images(small_grid):
    data = DSpritesData("dsprites-small")
    assert isinstance(data, disentanglement.GroundTruthData)
    assert data.factor_sizes == (3, 6, 10, 16, 16) and data.num_factors == 5
    assert data.factor_names == FACTOR_NAMES[1:] and data.observation_shape == (32, 32, 1)
    key = jax.random.key(0)
    factors = data.sample_factors(key, 500)
    assert factors.shape == (500, 5) and np.all(factors.max(axis=0) < np.array(data.factor_sizes))
    observed = data.observations(factors, key)
    assert observed.dtype == np.float32 and observed.shape == (500, 32, 32, 1)
    grid_rows = np.concatenate([np.zeros((500, 1), np.int64), factors], axis=1)
    np.testing.assert_array_equal(observed, small_grid[SMALL.index(grid_rows)])
    np.testing.assert_array_equal(DSpritesData(SMALL, images=small_grid).observations(factors, key), observed)
    with_color = DSpritesData("dsprites-small", factor_names=FACTOR_NAMES)
    assert with_color.factor_sizes == (1, 3, 6, 10, 16, 16)
    np.testing.assert_array_equal(with_color.observations(grid_rows, key), observed)

    full = DSpritesData()  # the full grid, rendered on demand: nothing of size 737,280 is made
    assert full.factor_sizes == (3, 6, 40, 32, 32)
    rows = full.sample_factors(jax.random.key(1), 64)
    full_rows = np.concatenate([np.zeros((64, 1), np.int64), rows], axis=1)
    np.testing.assert_array_equal(full.observations(rows, key), FULL.render(full_rows).astype(np.float32))

    def representation(x):  # centre of mass and area: codes that track posX, posY and scale
        images = np.asarray(x)[..., 0]
        return np.concatenate([centre_of_mass(images), images.sum(axis=(1, 2))[:, None]], axis=1)

    codes, sampled = disentanglement.sample_codes(representation, data, jax.random.key(2), 400, chunk_size=128)
    assert codes.shape == (400, 3) and sampled.shape == (400, 5)
    assert disentanglement.mig(codes, sampled) > 0.1

    with pytest.raises(DataError, match="leaves out"):
        DSpritesData(factor_names=("shape", "scale", "orientation", "posX"))
    with pytest.raises(DataError, match="must be the dsprites-small grid"):
        DSpritesData("dsprites-small", images=small_grid[:10])


# ------------------------------------------------------------------------------------------------------ loading


def test_dsprites_small_loads_through_the_cli_loading_path(tmp_path, monkeypatch, small_grid):
    overrides = ["data.name=dsprites-small"]
    cfg = config.apply_overrides(config.get_preset(cli._default_preset(overrides)), overrides)
    assert cfg.preset == "dsprites-small" and cfg.model.network == "conv"
    ds = runs.load_run_dataset(cfg)
    assert ds.sizes == {"train": 42_080, "valid": 2_000, "test": 2_000}
    assert ds.event_shape == (32, 32, 1) and ds.support == "binary" and ds.train.dtype == np.float32
    assert ds.factor_names == FACTOR_NAMES and ds.factor_sizes == SMALL.factor_sizes
    index = {}
    for split in ("train", "valid", "test"):
        factors = ds.factors[split]
        assert factors.dtype == np.int32 and factors.shape == (ds.sizes[split], 6)
        np.testing.assert_array_equal(ds.labels[split], factors[:, 1])  # the label is the shape
        index[split] = SMALL.index(factors)
        np.testing.assert_array_equal(ds.split(split), small_grid[index[split]].astype(np.float32))
    np.testing.assert_array_equal(np.sort(np.concatenate(list(index.values()))), np.arange(46_080))
    perm = np.random.default_rng(0).permutation(46_080)  # documented: test = last 2,000, valid from the rest
    np.testing.assert_array_equal(index["test"], perm[-2_000:])
    cache = tmp_path / "xdg" / "jaxvae" / "dsprites" / "dsprites-small-v1-32x32.npy"
    assert cache.is_file() and ds.info["files"] == [str(cache)]

    calls = counting_generator(monkeypatch)
    again = load_dataset("dsprites-small")
    assert calls == [] and again.train.tobytes() == ds.train.tobytes()
    explicit = load_dataset("dsprites-small", tmp_path / "mine", valid_size=100)
    assert len(calls) == 1 and (tmp_path / "mine" / "dsprites" / cache.name).is_file()
    assert explicit.sizes == {"train": 43_980, "valid": 100, "test": 2_000}
    with pytest.raises(DataError, match="generated, not read from files"):
        find_data_dir("dsprites-small")
    with pytest.raises(DataError, match="already binary"):
        load_dataset("dsprites-small", dynamic_binarization=True)


def test_dataset_checks_its_factors():
    x = np.zeros((4, 2, 2, 1), np.float32)
    good = {s: np.zeros((4, 2), np.int32) for s in ("train", "valid", "test")}
    ds = Dataset(x, x, x, name="t", event_shape=(2, 2, 1), support="binary", factors=good,
                 factor_names=("a", "b"), factor_sizes=(1, 2))
    assert not ds.factors["train"].flags.writeable
    with pytest.raises(DataError, match="go together"):
        Dataset(x, x, x, name="t", event_shape=(2, 2, 1), support="binary", factors=good)
    with pytest.raises(DataError, match=r"int32 \[4, 2\]"):
        Dataset(x, x, x, name="t", event_shape=(2, 2, 1), support="binary", factor_names=("a", "b"),
                factor_sizes=(1, 2), factors={**good, "test": np.zeros((4, 3), np.int32)})
    with pytest.raises(DataError, match=r"outside 0\.\.size-1"):
        Dataset(x, x, x, name="t", event_shape=(2, 2, 1), support="binary", factor_names=("a", "b"),
                factor_sizes=(1, 2), factors={**good, "test": np.full((4, 2), 1, np.int32)})


# ------------------------------------------------------------------------------------------------- slow tier


@pytest.mark.slow
@pytest.mark.extended  # about 90 s of host rendering on 2 cores; the renderer is checked on dsprites-small above
def test_full_grid_is_generated_cached_and_exact(tmp_path, monkeypatch):
    images, path = load_grid("dsprites", tmp_path)
    assert images.shape == (737_280, 64, 64, 1) and images.dtype == np.uint8
    assert path.stat().st_size == 128 + 737_280 * 512  # .npy header + 4,096 bits per image
    assert abs(images.mean(dtype=np.float64) / PUBLISHED_MEAN_PIXEL - 1) < 0.01
    grid = images.reshape(3, 6, 40, 32, 32, 64, 64)
    np.testing.assert_array_equal(grid[:, :, 0], grid[:, :, 39])  # orientation 2 pi repeats 0, as published
    index = np.random.default_rng(4).integers(0, FULL.num_images, 2000)
    np.testing.assert_array_equal(images[index], FULL.render(FULL.factors(index)))
    np.testing.assert_array_equal(DSpritesData(images=images).observations(FULL.factors(index)[:, 1:]),
                                  images[index].astype(np.float32))
    calls = counting_generator(monkeypatch)
    again, _ = load_grid("dsprites", tmp_path)
    assert calls == [] and again.tobytes() == images.tobytes()


def _host_memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


@pytest.mark.slow
@pytest.mark.skipif(_host_memory_gib() < 32, reason="the full grid as float32 is 12.1 GB")
def test_full_dsprites_loads_through_load_dataset(tmp_path):
    ds = load_dataset("dsprites", tmp_path)
    assert ds.sizes == {"train": 717_280, "valid": 10_000, "test": 10_000}
    assert ds.event_shape == (64, 64, 1) and ds.support == "binary"
    test_index = FULL.index(ds.factors["test"])
    np.testing.assert_array_equal(test_index, np.random.default_rng(0).permutation(737_280)[-10_000:])
    np.testing.assert_array_equal(ds.test, FULL.render(ds.factors["test"]).astype(np.float32))
