"""The face in a photo, as a renderer reads it: found, aligned and cropped by the prepare pipeline's tracker.

    portrait = find_portrait(photo, image_size=256, basis=basis, what="--image portrait.jpg")
    portrait.crop            # (S, S, 3) uint8: what the renderer animates
    portrait.motion          # (D,) the face's own motion in the run's real-face motion space
    portrait.transform       # (3,) crop = a * photo + (bx, by): how generated crops go back into the photo

The crop is the one `mirrortalk data prepare` makes of a video frame (prepare/tracking.py crop_transforms:
`crop_scale` times the face's size around its skull-fixed vertices), so a renderer sees a photo framed as its
training clips were.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mirrortalk_jax.data.prepare import clips, tracking
from mirrortalk_jax.data.prepare.motion_space import MeshBasis

MIN_FACE_PX = 48  # a smaller face (box side, photo pixels) has too little detail to animate: refused


@dataclasses.dataclass(frozen=True)
class Portrait:
    photo: np.ndarray  # (H, W, 3) uint8, the whole photo
    crop: np.ndarray  # (S, S, 3) uint8
    transform: np.ndarray  # (3,) float32 [a, bx, by]: crop = a * photo + (bx, by)
    mesh: np.ndarray  # (478, 3) crop pixels
    pose_matrix: np.ndarray  # (4, 4)
    motion: np.ndarray | None  # (D,) float32 in the basis' motion space; None without a basis
    faces: int  # faces found in the photo (the largest is used)

    @property
    def note(self) -> str:
        return f"{self.faces} faces in the photo, animating the largest" if self.faces > 1 else ""


def find_portrait(photo: np.ndarray, image_size: int, *, basis: MeshBasis | None = None, what: str = "photo",
                  crop_scale: float = clips.Options.crop_scale, max_faces: int = 4) -> Portrait:
    """The largest face of `photo` ((H, W, 3) uint8), cropped to `image_size` pixels.

    Raises ValueError naming `what` when there is no face or the face is smaller than MIN_FACE_PX.
    """
    from mirrortalk_jax.data.faces.landmarker import FaceLandmarker

    with FaceLandmarker(num_faces=max_faces, video=False) as marker:
        faces = marker.detect(photo)
    if not faces:
        raise ValueError(f"{what}: no face found ({photo.shape[1]}x{photo.shape[0]} pixels); a photo with one "
                         "clearly visible face expected")
    face = faces[0]  # largest first
    if face.size < MIN_FACE_PX:
        raise ValueError(f"{what}: the largest face is {face.size:.0f} pixels across; at least {MIN_FACE_PX} "
                         "expected (use a larger photo or one taken closer)")
    transform = tracking.crop_transforms(face.mesh[None], 25.0, image_size=image_size, scale=crop_scale)[0]
    mesh = tracking.to_crop(face.mesh[None].astype(np.float64), transform[None])[0].astype(np.float32)
    motion = None if basis is None else basis.motion(mesh[None], face.pose_matrix[None])[0]
    return Portrait(photo, clips.crop(photo, transform, image_size), transform, mesh, face.pose_matrix, motion,
                    len(faces))
