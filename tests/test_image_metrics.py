"""Image metrics: SSIM/PSNR against scikit-image, FID statistics against scipy, the InceptionV3 port, and
landmark distances on frames through a pluggable detector."""

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
