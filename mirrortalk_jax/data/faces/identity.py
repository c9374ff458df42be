"""dlib's 128-d face embedding (ResNet, 99.38% on LFW): who is in a clip, for speaker clustering and CSIM.

Faces of one person lie within 0.6 of each other (Euclidean), dlib's own threshold. About 80 ms per face on a
CPU, so a clip is embedded from a few frames only.
"""

from __future__ import annotations

import numpy as np

from mirrortalk_jax.data.faces import backend

EMBEDDING_DIM = 128
SAME_PERSON = 0.6


class IdentityEmbedder:
    def __init__(self):
        self._dlib = backend.require("dlib")
        self._net = self._dlib.face_recognition_model_v1(
            str(backend.dlib_model("dlib_face_recognition_resnet_model_v1.dat")))

    def __call__(self, image: np.ndarray, points68: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB and the face's (68, 2) dlib-68 points in its pixels -> (128,) float32."""
        dlib = self._dlib
        x0, y0 = points68.min(0)
        x1, y1 = points68.max(0)
        rect = dlib.rectangle(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in points68])
        return np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(image), shape), np.float32)


def cluster(embeddings: np.ndarray, threshold: float = SAME_PERSON) -> np.ndarray:
    """(N, 128) -> (N,) int cluster labels: average-linkage agglomerative clustering cut at `threshold`,
    numbered by first appearance."""
    from scipy.cluster import hierarchy

    if len(embeddings) < 2:
        return np.zeros(len(embeddings), np.int64)
    labels = hierarchy.fcluster(hierarchy.linkage(embeddings, "average"), threshold, criterion="distance")
    order = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    return np.array([order[label] for label in labels], np.int64)
