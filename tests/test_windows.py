"""data/windows.py: the one window helper (sync windows, centred audio windows), numpy and jax alike."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrortalk_jax.data.windows import centred_windows, sliding_windows


def test_sliding_windows_on_any_axis():
    x = np.arange(10 * 3).reshape(10, 3)
    w = sliding_windows(x, 5)
    assert w.shape == (6, 5, 3)
    np.testing.assert_array_equal(w[2], x[2:7])
    batched = sliding_windows(jnp.asarray(np.stack([x, -x])), 5, axis=1)
    assert batched.shape == (2, 6, 5, 3)
    np.testing.assert_array_equal(batched[1, 3], -x[3:8])
    with pytest.raises(ValueError, match="at least window=5"):
        sliding_windows(x[:4], 5)
    with pytest.raises(ValueError, match="positive"):
        sliding_windows(x, 0)


def test_centred_windows_zero_and_replicated_edges():
    rows = np.arange(1, 5, dtype=np.float32)[:, None]  # (4, 1)
    np.testing.assert_array_equal(centred_windows(rows, 1)[..., 0], [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0]])
    np.testing.assert_array_equal(centred_windows(rows, 2, edge="replicate")[..., 0],
                                  [[1, 1, 1, 2, 3], [1, 1, 2, 3, 4], [1, 2, 3, 4, 4], [2, 3, 4, 4, 4]])
    # stride 2 (50 Hz rows, 25 fps video): N // 2 frames centred on the even rows
    assert centred_windows(np.zeros((9, 8), np.float32), 5, stride=2).shape == (4, 11, 8)
    np.testing.assert_array_equal(centred_windows(np.arange(6.0)[:, None], 1, stride=2)[..., 0],
                                  [[0, 0, 1], [1, 2, 3], [3, 4, 5]])
    assert centred_windows(np.zeros((0, 3), np.float32), 2).shape == (0, 5, 3)
    with pytest.raises(ValueError, match="radius"):
        centred_windows(rows, -1)
    with pytest.raises(ValueError, match="edge"):
        centred_windows(rows, 1, edge="reflect")
    with pytest.raises(ValueError, match="empty"):
        centred_windows(np.zeros((0, 3)), 1, edge="replicate")


def test_centred_windows_in_blocks_under_jit_equal_the_whole():
    feats = np.random.default_rng(0).normal(size=(2, 9, 3)).astype(np.float32)
    # numpy, per clip, 7 frames: frame 4 is the last centred inside the 9 rows, frame 6 sees only zeros
    whole = np.stack([centred_windows(f, 2, stride=2, num_frames=7) for f in feats])
    assert whole.shape == (2, 7, 5, 3) and whole[:, 4].any() and not whole[:, 6].any()
    block = jax.jit(lambda x, start: centred_windows(x, 2, stride=2, start=start, num_frames=3, axis=1))
    for start in range(5):  # one compilation, traced start
        np.testing.assert_array_equal(block(jnp.asarray(feats), jnp.int32(start)), whole[:, start:start + 3])
