"""Input files of talking-head generation, checked with messages that name the file and what was expected.

3DMM files have the layout of DreamTalk's examples (PIRenderer's Deep3DFaceRecon extraction): a .mat, or a .npz
with the same keys, holding `coeff` (T, 257) BFM coefficients per frame (identity 0:80, expression 80:144,
texture 144:224, angles 224:227, lighting 227:254, translation 254:257) and `transform_params` (T, 5) =
[w0, h0, s, tx, ty] of the face crop. A .npy holds the array itself: (T, M) expression for a style clip,
(T, 9) pose (3 angles, 3 translations, 3 crop values) for a pose.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mirrortalk_jax.data import media

COEFF_KEY, TRANSFORM_KEY = "coeff", "transform_params"
BFM_WIDTH = 257
EXPRESSION = slice(80, 144)
ANGLES = slice(224, 227)
TRANSLATION = slice(254, 257)
POSE_DIM = 9  # angles (3), translation (3), crop (s, tx, ty)
# The original's "no_move" pose (generators/utils.py render_video): frontal, untranslated, with the crop values
# of a typical 256x256 face crop.
FRONTAL_POSE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9370641, 126.84911, 129.03864], np.float32)
THREE_DMM_SUFFIXES = (".mat", ".npz")


def _exists(path: str | os.PathLike, what: str) -> Path:
    """`path` if it is a readable file; else why not ("no such file", "is a directory", "symlink loop", ...)."""
    return media.check_file(path, what)


def _finite(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    array = np.asarray(array, np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} {path}: {int(np.sum(~np.isfinite(array)))} NaN or infinite values")
    return array


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{what} {path}: not a readable .npy array ({e})") from e


def _read_3dmm(path: Path, what: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of a .mat (scipy.io.loadmat) or .npz, each 2-D; `coeff` at least 257 columns wide."""
    try:
        if path.suffix == ".mat":
            from scipy.io import loadmat

            data = loadmat(path)
        else:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise ValueError(f"{what} {path}: not a readable {path.suffix} file ({e})") from e
    out = {}
    for key in keys:
        if key not in data:
            found = sorted(k for k in data if not k.startswith("__"))
            raise ValueError(f"{what} {path}: no {key!r} array (found {found}); expected the original's 3DMM "
                             f"layout: {COEFF_KEY!r} (T, {BFM_WIDTH}) BFM coefficients (expression in columns "
                             f"80:144, angles 224:227, translation 254:257) and {TRANSFORM_KEY!r} (T, 5)")
        out[key] = np.asarray(data[key])
    coeff = out.get(COEFF_KEY)
    if coeff is not None and (coeff.ndim != 2 or coeff.shape[1] < BFM_WIDTH or not len(coeff)):
        raise ValueError(f"{what} {path}: {COEFF_KEY!r} has shape {coeff.shape}; expected (T, {BFM_WIDTH}) BFM "
                         "coefficients (expression in columns 80:144, angles 224:227, translation 254:257)")
    params = out.get(TRANSFORM_KEY)
    if params is not None and (params.ndim != 2 or params.shape[1] < 3 or len(params) != len(coeff)):
        raise ValueError(f"{what} {path}: {TRANSFORM_KEY!r} has shape {params.shape}; expected ({len(coeff)}, 5) "
                         "(one [w0, h0, s, tx, ty] per frame of coeff; the last 3 are the pose's crop values)")
    return out


def _load_rows(path: str | os.PathLike, what: str, width: int, from_3dmm: Callable[[Path], np.ndarray],
               meaning: str) -> np.ndarray:
    """(frames, width) float32 rows from a 3DMM file (`from_3dmm` picks the columns) or a .npy, checked."""
    path = _exists(path, what)
    if path.suffix in THREE_DMM_SUFFIXES:
        rows = from_3dmm(path)
    elif path.suffix == ".npy":
        rows = _read_npy(path, what)
    else:
        raise ValueError(f"{what} {path}: expected a .mat / .npz 3DMM file or a .npy (frames, {width}) array")
    if rows.ndim != 2 or rows.shape[1] != width or not len(rows):
        raise ValueError(f"{what} {path}: array of shape {rows.shape}; expected (frames, {width}): {meaning}")
    return _finite(rows, path, what)


def load_style_clip(path: str | os.PathLike, motion_dim: int = 64, what: str = "style clip") -> np.ndarray:
    """A reference clip's expression (R, motion_dim) float32: columns 80:144 of a 3DMM file's `coeff` (as the
    original's get_video_style_clip), or a .npy of shape (R, motion_dim)."""
    def expression(p: Path) -> np.ndarray:
        return _read_3dmm(p, what, (COEFF_KEY,))[COEFF_KEY][:, EXPRESSION]
    return _load_rows(path, what, motion_dim, expression, "expression coefficients (the denoiser's motion width)")


def load_pose(path: str | os.PathLike, what: str = "pose") -> np.ndarray:
    """Head pose per frame (P, 9) float32: angles + translation + crop (s, tx, ty), from a 3DMM file (columns
    224:227 and 254:257 of `coeff`, the last 3 of `transform_params`, as the original's get_pose_params) or a
    .npy of shape (P, 9)."""
    def pose(p: Path) -> np.ndarray:
        data = _read_3dmm(p, what, (COEFF_KEY, TRANSFORM_KEY))
        coeff = data[COEFF_KEY]
        return np.concatenate([coeff[:, ANGLES], coeff[:, TRANSLATION], data[TRANSFORM_KEY][:, -3:]], axis=1)
    return _load_rows(path, what, POSE_DIM, pose, "3 angles, 3 translations, 3 crop values (s, tx, ty)")


def has_pose(path: str | os.PathLike) -> bool:
    """Whether a style clip file also carries head pose (a 3DMM file with `transform_params`)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return TRANSFORM_KEY in npz.files
    if path.suffix == ".mat":
        from scipy.io import whosmat

        return any(name == TRANSFORM_KEY for name, _, _ in whosmat(path))
    return False


def fit_pose(pose: np.ndarray, length: int) -> np.ndarray:
    """(P, 9) -> (length, 9) as the original demo: the first `length` poses, or all of them followed by the last
    one repeated (no reflection or looping)."""
    if len(pose) >= length:
        return pose[:length]
    return np.concatenate([pose, np.repeat(pose[-1:], length - len(pose), axis=0)])


def load_image(path: str | os.PathLike, size: tuple[int, int], what: str = "image") -> np.ndarray:
    """A portrait as (H, W, 3) uint8 RGB at the renderer's `size` (H, W), read as displayed (media.read_image:
    EXIF orientation, 16-bit and alpha handled, bombs refused). A face crop of another size with the same aspect
    ratio is resized (bilinear); the crop itself is the user's (the original crops with dlib)."""
    from PIL import Image

    h, w = size
    # Crops down to the renderer's own size are fine; smaller ones would be blown up from a thumbnail.
    image = media.read_image(path, what, min_side=min(media.MIN_SIDE, h, w))
    ih, iw = image.shape[:2]
    if (ih, iw) != (h, w):
        # One pixel of slack: a downscaled (huge) crop rounds its short side.
        if abs(ih * w - iw * h) > max(h, w):
            raise ValueError(f"{what} {path}: {iw}x{ih} pixels; expected a face crop of the "
                             f"renderer's size {w}x{h} (or the same aspect ratio, resized)")
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), np.uint8)
    return image


def load_audio_rows(path: str | os.PathLike, width: int, what: str = "audio features") -> np.ndarray:
    """Speech-encoder feature rows (N, width) float32: a .npy (N, width), or a .npz from `mirrortalk features`
    (its `features_50hz`)."""
    path = _exists(path, what)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "features_50hz" not in npz.files:
                raise ValueError(f"{what} {path}: no 'features_50hz' array (found {npz.files}); expected a .npy "
                                 "(rows, width) or a .npz written by `mirrortalk features`")
            rows = npz["features_50hz"]
    elif path.suffix == ".npy":
        rows = _read_npy(path, what)
    else:
        raise ValueError(f"{what} {path}: expected a .npy (rows, {width}) array or a `mirrortalk features` .npz")
    if rows.ndim != 2 or rows.shape[1] != width or not len(rows):
        raise ValueError(f"{what} {path}: shape {rows.shape}; expected (rows, {width}) (the denoiser's "
                         "audio_dim)")
    return _finite(rows, path, what)


def load_identity(path: str | os.PathLike, num_landmarks: int, what: str = "identity") -> np.ndarray:
    """The speaker's identity as the style predictor reads it: 3D landmarks (K, 3) float32 of one frame, from a
    .npy of shape (K, 3) or (T, K, 3) (its first frame)."""
    path = _exists(path, what)
    if path.suffix != ".npy":
        raise ValueError(f"{what} {path}: expected a .npy of ({num_landmarks}, 3) landmarks")
    landmarks = _read_npy(path, what)
    if landmarks.ndim == 3 and len(landmarks):
        landmarks = landmarks[0]
    if landmarks.shape != (num_landmarks, 3):
        raise ValueError(f"{what} {path}: shape {landmarks.shape}; expected ({num_landmarks}, 3) 3D landmarks "
                         "(or (frames, K, 3), of which the first frame is used)")
    return _finite(landmarks, path, what)
