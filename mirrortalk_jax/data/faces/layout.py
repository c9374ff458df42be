"""Named points of MediaPipe's 478-point face mesh, and the dlib-68 layout derived from it.

Index conventions follow MediaPipe's mesh (0-467 face, 468-472 right iris, 473-477 left iris; "right" is the
subject's right, on the left of the image). The dlib-68 layout is what the LMD metrics and SynthTalk use.
"""

from __future__ import annotations

import numpy as np

# dlib point i = mean of the mesh vertices DLIB68_FROM_MESH[i]. Derived by tools/fit_dlib68_from_mesh.py (each
# dlib point's nearest vertex or edge midpoint within the same facial part, fitted against dlib's 68-point
# predictor on scikit-image's astronaut photo at 10 rotations and scales): mean error 0.023 eye-corner
# distances there (about 1.5 px on a 256-px crop), at most 0.061 (outer end of the left brow).
DLIB68_FROM_MESH: tuple[tuple[int, ...], ...] = (
    (234, 127), (93, 234), (132,), (58,), (172,), (150, 136), (149,), (148, 176), (152,), (377,), (378,),
    (365, 379), (397,), (288,), (361,), (454, 323), (356,),                      # 0-16 jaw
    (70,), (63,), (105, 66), (66, 107), (107,),                                  # 17-21 right brow
    (285,), (296, 336), (334, 296), (293,), (276,),                              # 22-26 left brow
    (168,), (197,), (195, 5), (275, 4), (98, 97), (97,), (2,), (326,), (326, 327),  # 27-35 nose
    (33,), (160, 159), (158, 157), (155,), (145, 153), (163, 144),               # 36-41 right eye
    (382,), (385, 384), (387, 386), (263,), (390, 373), (374, 380),              # 42-47 left eye
    (61,), (40, 39), (37,), (0,), (267,), (269, 270), (291,), (405, 321), (314,), (17,), (84,), (91, 181),  # outer lips
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),                   # 60-67 inner lips
)

# Vertices that move with the skull, not with expression: nose bridge and tip, eye corners, forehead, the
# face's sides at the cheekbones. Head pose and the expression basis align the mesh on these.
RIGID = (168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 10, 151, 9, 8, 109, 338, 67, 297, 234, 454, 127, 356)

# Eyes: (outer corner, inner corner, upper lid, lower lid, iris centre) per eye.
RIGHT_EYE = (33, 133, 159, 145, 468)
LEFT_EYE = (263, 362, 386, 374, 473)
IRISES = tuple(range(468, 478))
# Inner lips: (corner, corner, upper middle, lower middle).
INNER_LIPS = (78, 308, 13, 14)
NOSE_TIP = 1


def dlib68(mesh: np.ndarray) -> np.ndarray:
    """(..., 478, C) mesh -> (..., 68, C) points in the dlib-68 layout."""
    return np.stack([mesh[..., list(v), :].mean(-2) for v in DLIB68_FROM_MESH], axis=-2)


def eye_openness(mesh: np.ndarray) -> np.ndarray:
    """(..., 478, C) -> (..., 2) lid gap / eye width for the (right, left) eye: ~0.3 open, ~0.05 closed."""
    out = []
    for outer, inner, top, bottom, _ in (RIGHT_EYE, LEFT_EYE):
        width = np.linalg.norm(mesh[..., outer, :2] - mesh[..., inner, :2], axis=-1)
        out.append(np.linalg.norm(mesh[..., top, :2] - mesh[..., bottom, :2], axis=-1) / np.maximum(width, 1e-6))
    return np.stack(out, -1)


def gaze(mesh: np.ndarray) -> np.ndarray:
    """(..., 478, C) -> (..., 2) gaze (x, y): the irises' offset from the eyes' centres in eye widths, averaged
    over both eyes (x toward the image's right, y down)."""
    offsets = []
    for outer, inner, top, bottom, iris in (RIGHT_EYE, LEFT_EYE):
        centre = (mesh[..., outer, :2] + mesh[..., inner, :2] + mesh[..., top, :2] + mesh[..., bottom, :2]) / 4
        width = np.linalg.norm(mesh[..., outer, :2] - mesh[..., inner, :2], axis=-1)[..., None]
        offsets.append((mesh[..., iris, :2] - centre) / np.maximum(width, 1e-6))
    return (offsets[0] + offsets[1]) / 2


def mouth_openness(mesh: np.ndarray) -> np.ndarray:
    """(..., 478, C) -> (...,) inner-lip gap / mouth width."""
    a, b, top, bottom = INNER_LIPS
    width = np.linalg.norm(mesh[..., a, :2] - mesh[..., b, :2], axis=-1)
    return np.linalg.norm(mesh[..., top, :2] - mesh[..., bottom, :2], axis=-1) / np.maximum(width, 1e-6)
