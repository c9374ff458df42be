"""SynthTalk generation: speech timing, content -> motion alignment, style independence, determinism."""

import numpy as np
import pytest

from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.synthtalk import corpus, speech, style, visemes
from tests.conftest import MICRO

FPS = 25.0
VOICE = speech.Voice("en-us+m3", pitch=45, pitch_range=50, rate=150)
TEXT = "Bob may pay the bill before noon."


@pytest.fixture(scope="module")
def utterance():
    return speech.synthesize(TEXT, VOICE, seed=1)


def _num_frames(utt):
    return int(np.ceil(utt.duration * FPS))


def test_speech_is_16k_with_ordered_phoneme_timings(utterance):
    assert utterance.sample_rate == 16000 and utterance.audio.dtype == np.float32
    assert 1.0 < utterance.duration < 4.0
    starts = [p.start for p in utterance.phonemes]
    assert starts == sorted(starts)
    assert all(p.end > p.start for p in utterance.phonemes)
    assert utterance.phonemes[-1].end == pytest.approx(utterance.duration, abs=1e-3)
    ipa = [p.ipa for p in utterance.phonemes]
    assert ipa.count("b") >= 3 and "m" in ipa and "p" in ipa  # Bob, may, pay, bill, before
    assert any(p.stress == 2 for p in utterance.phonemes)


def test_speech_energy_follows_phonemes(utterance):
    """Audio is loud inside vowels and quiet in the trailing pause: the timings describe the waveform."""
    sr = utterance.sample_rate
    def rms(p):
        seg = utterance.audio[int(p.start * sr):int(p.end * sr)]
        return float(np.sqrt(np.mean(seg ** 2))) if len(seg) else 0.0
    vowels = [rms(p) for p in utterance.phonemes if visemes.phoneme_class(p.ipa) == "vowel"]
    closures = [rms(p) for p in utterance.phonemes if p.ipa in ("p", "b")]
    assert np.median(vowels) > 2 * np.median(closures)


def test_speech_is_deterministic_whatever_came_before():
    first = speech.synthesize(TEXT, VOICE, seed=7)
    speech.synthesize("Something else entirely.", speech.Voice("en-us+f2", 70, 30, 190), seed=3)
    again = speech.synthesize(TEXT, VOICE, seed=7)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.phonemes == again.phonemes


def test_voices_differ():
    a = speech.synthesize(TEXT, speech.Voice("en-us+m3", 30, 50, 150))
    b = speech.synthesize(TEXT, speech.Voice("en-us+f2", 75, 50, 150))
    # Different pitch -> different spectral centroid of the voiced parts.
    def centroid(x):
        spec = np.abs(np.fft.rfft(x))
        return float((spec * np.arange(len(spec))).sum() / spec.sum() / len(spec))
    assert abs(centroid(a.audio) - centroid(b.audio)) > 0.01


def test_unknown_voice_raises():
    with pytest.raises(ValueError, match="no voice"):
        speech.synthesize(TEXT, speech.Voice("xx-nonexistent"))


def test_mouth_opens_in_vowels_and_closes_on_bilabials(utterance):
    num_frames = _num_frames(utterance)
    track = visemes.articulation_track(utterance.phonemes, num_frames, FPS)
    jaw, press = track[:, 0], track[:, 3]
    centre_frame = lambda p: int(0.5 * (p.start + p.end) * FPS)  # noqa: E731
    vowel_frames = [centre_frame(p) for p in utterance.phonemes
                    if visemes.phoneme_class(p.ipa) == "vowel" and p.stress == 2]
    bilabial_frames = [centre_frame(p) for p in utterance.phonemes if p.ipa in ("p", "b", "m")]
    # Lips close (press) on every bilabial, at its own frame, and are open in stressed vowels.
    assert np.all(press[bilabial_frames] > 0.5)
    assert np.all(press[vowel_frames] < 0.35)
    assert np.mean(jaw[vowel_frames]) > 2 * np.mean(jaw[bilabial_frames])
    # The jaw peaks inside vowels: every local maximum of jaw opening falls in (or next to) a vowel.
    phone = visemes.frame_phoneme_index(utterance.phonemes, num_frames, FPS)
    peaks = [t for t in range(1, num_frames - 1) if jaw[t] > jaw[t - 1] and jaw[t] >= jaw[t + 1] and jaw[t] > 0.3]
    assert peaks
    for t in peaks:
        near = {phone[k] for k in range(max(t - 1, 0), min(t + 2, num_frames)) if phone[k] >= 0}
        assert any(visemes.phoneme_class(utterance.phonemes[i].ipa) == "vowel" for i in near), t


def test_shifting_phonemes_shifts_the_track(utterance):
    """Alignment is to the phoneme timings: delaying every phoneme by 4 frames delays the mouth by 4 frames."""
    shift = 4 / FPS
    shifted = [speech.Phoneme(p.ipa, p.start + shift, p.end + shift, p.stress, p.word) for p in utterance.phonemes]
    n = _num_frames(utterance)
    a = visemes.articulation_track(utterance.phonemes, n, FPS)
    b = visemes.articulation_track(shifted, n + 4, FPS)
    np.testing.assert_allclose(b[4:], a, atol=1e-5)


def _styled(utt, st, seed=0):
    n = _num_frames(utt)
    art = visemes.articulation_track(utt.phonemes, n, FPS)
    stress = visemes.stress_envelope(utt.phonemes, n, FPS)
    return style.compose_motion(art, stress, st, FPS, np.random.default_rng(seed))


def test_style_changes_style_channels_not_timing(utterance):
    calm = style.SpeakerStyle(articulation_gain=0.6, lip_corner_bias=-0.3, brow_gain=0.1, sway_amplitude=0.02)
    lively = style.SpeakerStyle(articulation_gain=1.4, lip_corner_bias=0.5, brow_gain=0.9, sway_amplitude=0.1)
    a, b = _styled(utterance, calm), _styled(utterance, lively)
    idx = SYNTHTALK_SPEC.index
    # Bilabial closures happen at exactly the same frames and strength: style never moves content timing.
    np.testing.assert_array_equal(a[:, idx("lip_press")], b[:, idx("lip_press")])
    jaw_a, jaw_b = a[:, idx("jaw_open")], b[:, idx("jaw_open")]
    # Articulation gain scales the same trajectory (up to the clip at fully open): same frames, wider mouth.
    unclipped = jaw_b < 1.0
    np.testing.assert_allclose(jaw_b[unclipped], jaw_a[unclipped] * 1.4 / 0.6, rtol=1e-4, atol=1e-6)
    assert jaw_b.max() > 1.5 * jaw_a.max()
    assert b[:, idx("corner_pull")].mean() > 0 > a[:, idx("corner_pull")].mean()  # smile vs frown
    assert np.ptp(b[:, idx("brow_raise")]) > 3 * np.ptp(a[:, idx("brow_raise")])
    assert np.ptp(b[:, idx("yaw")]) > 2 * np.ptp(a[:, idx("yaw")])


def test_blink_rate_controls_blinks():
    rng = np.random.default_rng(0)
    slow = style.blink_track(25 * 60, FPS, 6.0, rng)
    fast = style.blink_track(25 * 60, FPS, 30.0, rng)
    count = lambda x: int(np.sum((x[1:] >= 0.99) & (x[:-1] < 0.99)))  # noqa: E731
    assert count(fast) > 2 * count(slow) > 0


def test_style_params_round_trip():
    st = style.SpeakerStyle.sample(np.random.default_rng(3))
    assert style.SpeakerStyle.from_array(st.to_array()) == pytest.approx(st) or \
        np.allclose(style.SpeakerStyle.from_array(st.to_array()).to_array(), st.to_array())


def test_splits_are_disjoint_by_speaker_and_sentence():
    cfg = corpus.VARIANTS["tiny"]
    plans = corpus.plan_clips(cfg)
    train_spk = {p.speaker for p in plans["train"]}
    assert {p.speaker for p in plans["heldout_speakers"]}.isdisjoint(train_spk)
    assert {p.speaker for p in plans["heldout_sentences"]} == train_spk
    assert {p.sentence for p in plans["heldout_sentences"]}.isdisjoint({p.sentence for p in plans["train"]})
    assert len(plans["train"]) == cfg.train_speakers * cfg.sentences_per_speaker


def test_same_seed_same_clip_and_other_seed_differs():
    plan = corpus.plan_clips(MICRO)["train"][0]
    a, b = corpus.make_clip(MICRO, plan), corpus.make_clip(MICRO, plan)
    for key in ("audio", "motion", "landmarks_2d", "style_params"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["frames"] == b["frames"] and a["metadata"] == b["metadata"]
    other = corpus.make_clip(corpus.SynthTalkConfig(**{**MICRO.__dict__, "seed": 1}), plan)
    assert not np.array_equal(other["style_params"], a["style_params"])


def test_clip_lengths_line_up():
    plan = corpus.plan_clips(MICRO)["heldout_speakers"][0]
    clip = corpus.make_clip(MICRO, plan)
    num_frames = clip["motion"].shape[0]
    assert len(clip["audio"]) == num_frames * 640  # 16 kHz / 25 fps
    assert clip["landmarks_2d"].shape == (num_frames, 68, 2)
    assert len(clip["frames"]) == num_frames
