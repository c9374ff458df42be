r"""MirrorTalk's three stages on a real corpus prepared by `mirrortalk data prepare` (HDTF, CREMA-D, MEAD, VoxCeleb2).

    mirrortalk data prepare ~/HDTF --dataset hdtf --out data/hdtf
    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/real_corpus.py:hdtf,motion_expert \
        --workdir=runs/hdtf/motion_expert
    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/real_corpus.py:hdtf,style_encoder \
        --workdir=runs/hdtf/style_encoder --config.model.content_encoder_workdir=runs/hdtf/motion_expert
    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/real_corpus.py:hdtf --workdir=runs/hdtf/mirrortalk \
        --config.model.style_encoder_workdir=runs/hdtf/style_encoder \
        --config.model.motion_expert_workdir=runs/hdtf/motion_expert
    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/real_corpus.py:hdtf,renderer --workdir=runs/hdtf/renderer

The argument is `<corpus>[,<stage>][,<size>]`: corpus one of hdtf, crema_d, mead, voxceleb2 (default hdtf; its
dataset at data/<corpus>, or `--config.data.dataset_dir`); stage motion_expert, style_encoder, mirrortalk (default),
mimictalk (ICS-A2M), renderer (ours, configs/renderer.py) or pirenderer (the PIRenderer port trained the same way); size base (default;
256x256 renderers: prepare with --image_size 256) or tiny (a 2-core CPU smoke run). The models read the dataset's motion space (the corpus' fitted
mesh basis) from its metadata; nothing here depends on the number of channels. The audio standardisation
(`model.audio_mean` / `audio_std`, where a stage has it) keeps the SynthTalk values: set your corpus' log-mel
statistics.
"""

from mirrortalk_jax.configs import mimictalk_a2m, mirrortalk, motion_expert, renderer, style_encoder

CORPORA = ("hdtf", "crema_d", "mead", "voxceleb2")
# Stage -> size ("base" / "tiny") -> its config. The stage-0/1 configs call their full size "default".
STAGES = {
    "motion_expert": lambda size: motion_expert.get_config("default" if size == "base" else size),
    "style_encoder": lambda size: style_encoder.get_config("default" if size == "base" else size),
    "mirrortalk": mirrortalk.get_config,
    # MimicTalk's ICS-A2M: tiny as on SynthTalk; base = the released architecture (HuBERT features: add them with
    # `mirrortalk features`).
    "mimictalk": lambda size: mimictalk_a2m.get_config("tiny" if size == "tiny" else "released"),
    "renderer": renderer.get_config,
    "pirenderer": lambda size: renderer.get_config(f"{size},pirenderer"),
}
SIZES = ("base", "tiny")


def get_config(arg: str | None = None):
    tokens = (arg or "hdtf").split(",")
    corpus = tokens[0] if tokens[0] in CORPORA else "hdtf"  # a bare stage or size: HDTF's
    options = tokens[1:] if tokens[0] in CORPORA else tokens
    unknown = sorted(set(options) - set(STAGES) - set(SIZES))
    if len(unknown) == 1 and unknown == [tokens[0]]:
        raise ValueError(f"unknown corpus {tokens[0]!r}: use one of {list(CORPORA)}")
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}: a stage {sorted(STAGES)} and/or a size {list(SIZES)}")
    stage = next((o for o in options if o in STAGES), "mirrortalk")
    size = next((o for o in options if o in SIZES), "base")
    config = STAGES[stage](size)
    config.data.dataset_dir = f"data/{corpus}"
    config.data.train_split = "train"
    config.data.eval_split = "heldout_sentences"
    return config
