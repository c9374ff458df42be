"""Derives the dlib-68 layout from MediaPipe's 478-point mesh (prints the table kept in data/faces/layout.py).

Runs dlib's 68-point predictor and MediaPipe's face landmarker on scikit-image's astronaut photo at several
rotations and scales, and picks for every dlib point the mesh vertex, or midpoint of a mesh edge, of the same
facial part (MediaPipe's own contour sets: face oval, brows, nose, eyes, outer and inner lips) closest to it on
average, in units of the eye-corner distance. Inner-lip points keep their half (upper 61-63, lower 65-67) of
MediaPipe's inner-lip loop, which a closed mouth alone cannot tell apart.

    python tools/fit_dlib68_from_mesh.py      # needs mirrortalk_jax[faces] and scikit-image
"""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image

from mirrortalk_jax.data.faces import backend, landmarker


def _connections(name: str) -> list[tuple[int, int]]:
    vision = backend.require("mediapipe.tasks.python.vision.face_landmarker")
    return [(c.start, c.end) for c in getattr(vision.FaceLandmarksConnections, name)]


def _loops(edges: list[tuple[int, int]]) -> list[set[int]]:
    """Connected vertex sets of an edge list."""
    sets: list[set[int]] = []
    for a, b in edges:
        hit = [s for s in sets if a in s or b in s]
        merged = set().union({a, b}, *hit)
        sets = [s for s in sets if s not in hit] + [merged]
    return sets


def _half(loop_edges: list[tuple[int, int]], start: int, end: int, upper: bool, mesh: np.ndarray) -> set[int]:
    """The vertices on one of the two paths from `start` to `end` around a loop: the upper one (smaller mean y)
    or the lower one."""
    nxt: dict[int, list[int]] = {}
    for a, b in loop_edges:
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    paths = []
    for first in nxt[start]:
        path, prev, cur = [start, first], start, first
        while cur != end:
            prev, cur = cur, next(v for v in nxt[cur] if v != prev)
            path.append(cur)
        paths.append(path)
    mean_y = [mesh[:, p, 1].mean() for p in paths]
    return set(paths[int(np.argmin(mean_y) if upper else np.argmax(mean_y))])


def measure() -> tuple[np.ndarray, np.ndarray]:
    """(mesh (N, 478, 2), dlib (N, 68, 2)) in eye-corner-distance units over the augmented photos."""
    dlib = backend.require("dlib")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(backend.dlib_model("shape_predictor_68_face_landmarks.dat")))
    photo = Image.fromarray(skimage.data.astronaut())
    meshes, points = [], []
    with landmarker.FaceLandmarker(num_faces=1, video=False) as marker:
        for angle in (-15, -8, 0, 8, 15):
            for scale in (0.6, 1.0):
                image = photo.rotate(angle, resample=Image.BICUBIC, center=(230, 130))
                image = np.asarray(image.resize((int(512 * scale),) * 2, Image.BICUBIC))
                faces, boxes = marker.detect(image), detector(image, 1)
                if not faces or not boxes:
                    continue
                shape = predictor(image, boxes[0])
                dl = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
                unit = np.linalg.norm(dl[36] - dl[45])
                meshes.append(faces[0].mesh[:, :2] / unit)
                points.append(dl / unit)
    return np.array(meshes), np.array(points)


def fit() -> tuple[tuple[int, ...], ...]:
    mesh, points = measure()
    oval = _connections("FACE_LANDMARKS_FACE_OVAL")
    brows = _connections("FACE_LANDMARKS_LEFT_EYEBROW") + _connections("FACE_LANDMARKS_RIGHT_EYEBROW")
    eyes = _connections("FACE_LANDMARKS_LEFT_EYE") + _connections("FACE_LANDMARKS_RIGHT_EYE")
    nose = _connections("FACE_LANDMARKS_NOSE")
    lips = _connections("FACE_LANDMARKS_LIPS")
    loops = _loops(lips)
    spread = [np.ptp(mesh[:, sorted(s), 0], axis=1).mean() for s in loops]
    outer, inner = (loops[int(np.argmax(spread))], loops[int(np.argmin(spread))])
    inner_edges = [e for e in lips if e[0] in inner]
    outer_edges = [e for e in lips if e[0] in outer]

    def nearest(index: int, edges: list[tuple[int, int]], allowed: set[int] | None = None) -> tuple[int, ...]:
        verts = sorted(allowed or {v for e in edges for v in e})
        options = [(v,) for v in verts] + [e for e in edges if allowed is None or set(e) <= allowed]
        errors = [np.linalg.norm(mesh[:, list(o)].mean(1) - points[:, index], axis=-1).mean() for o in options]
        return tuple(int(v) for v in options[int(np.argmin(errors))])

    table = [nearest(i, oval) for i in range(17)] + [nearest(i, brows) for i in range(17, 27)]
    table += [nearest(i, nose) for i in range(27, 36)] + [nearest(i, eyes) for i in range(36, 48)]
    table += [nearest(i, outer_edges) for i in range(48, 60)]
    corner_a, corner_b = nearest(60, inner_edges)[0], nearest(64, inner_edges)[0]
    upper = _half(inner_edges, corner_a, corner_b, True, mesh)
    lower = _half(inner_edges, corner_a, corner_b, False, mesh)
    table += [(corner_a,)] + [nearest(i, inner_edges, upper) for i in (61, 62, 63)] + [(corner_b,)]
    table += [nearest(i, inner_edges, lower) for i in (65, 66, 67)]
    derived = np.stack([mesh[:, list(t)].mean(1) for t in table], axis=1)
    error = np.linalg.norm(derived - points, axis=-1).mean(0)
    print(f"{len(mesh)} photos; mean error {error.mean():.4f} eye-corner distances (max {error.max():.4f} at "
          f"point {int(error.argmax())})")
    return tuple(table)


if __name__ == "__main__":
    print(fit())
