"""Talking-head videos from audio and a portrait with converted or trained models (`mirrortalk generate`).

    inputs.py       the input files: 3DMM style clips and poses, portraits, audio feature rows, identities
    checkpoints.py  a converted checkpoint or training run, refused unless it holds the expected model
    render.py       per-frame renderer coefficients + portrait -> uint8 frames, in fixed-size batches
    dreamtalk.py    DreamTalk: audio rows + style (clip or style predictor) + pose -> motion -> frames
"""
