"""Real-face analysis: MediaPipe's face landmarker (478 3-D points, blendshapes, head pose), the dlib-68 layout
derived from it, and dlib's 128-d identity embedding. Needs the `faces` extra (`pip install mirrortalk_jax[faces]`).
"""
