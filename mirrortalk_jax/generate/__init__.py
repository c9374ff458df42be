"""Talking-face videos from speech and a photo with converted or trained models (`mirrortalk generate`, `serve`).

    talking_face.py  MirrorTalk / ICS-A2M + a renderer: photo, speech, style video -> mp4; streaming; batch jobs
    portrait.py      the largest face of a photo, cropped as `data prepare` crops frames, and its motion
    reference.py     a style reference video -> its motion in a run's real-face motion space
    paste_back.py    generated crops back into the photo with a soft mask
    web_app.py       the Gradio web demo over talking_face.py (the `demo` extra)
    inputs.py        DreamTalk's input files: 3DMM style clips and poses, face crops, audio feature rows, identities
    render.py        DreamTalk's PIRenderer path: per-frame coefficients + portrait -> uint8 frames, in batches
    dreamtalk.py     DreamTalk: audio rows + style (clip or style predictor) + pose -> motion -> frames
"""
