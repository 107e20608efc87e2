"""Build the demo model's data: training utterances and the held-out evaluation set.

Training: sentences from `text.py` spoken by the training voices, augmented, as FLAC + a NeMo
manifest under `training/data/`. Evaluation (shipped in the package), without augmentation, as
Ogg/Opus: sentences never used in training (a third of the first set of structures never used
either) spoken by training voices and by a held-out voice, and the hand-written everyday sentences
of `everyday.txt` spoken by the two held-out voices.
"""

from __future__ import annotations

import argparse
import json
import random
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf

from training.synth import HELD_OUT_VOICES, RATE, Voice, augment, held_out_voice, synthesise, training_voice
from training.text import held_out_structures, sentences, unique_sentences

ROOT = Path(__file__).resolve().parent
EVAL_DIR = ROOT.parent / "service" / "parakeet_serve" / "eval"
SAMPLES_DIR = ROOT.parent / "service" / "parakeet_serve" / "samples"
# The quickstart's sample: a held-out sentence (this index among the seen-voice ones), to be picked
# after a run among those its model transcribes exactly (the README's sample must come out right).
QUICKSTART_SENTENCE = 102
HELD_OUT_SAMPLE = 14  # the same for the other sample: a held-out-voice sentence it gets nearly right
TRAIN_UTTERANCES = 20000
# More sentences in more voice draws, rendered after the base share with their own seed so that the
# base share, and the evaluation sets drawn after it, stay what they were (issue 46).
EXTRA_UTTERANCES = 20000


def _render(job: tuple[Path, Voice, str, int, bool, str]) -> dict:
    path, voice, text, seed, noisy, subtype = job
    audio = synthesise(voice, text)
    if noisy:
        audio = augment(audio, random.Random(seed))
    fmt = "OGG" if subtype == "OPUS" else "FLAC"
    sf.write(path, audio, RATE, format=fmt, subtype=subtype)
    return {"audio_filepath": path.name if subtype == "OPUS" else str(path), "duration": round(len(audio) / RATE, 3),
            "text": text, "voice": voice.family}


def build(train_count: int, eval_seen: int, eval_held_out: int, seed: int, workers: int,
          training_audio: bool = True, extra_count: int = EXTRA_UTTERANCES) -> None:
    """Training utterances (one sentence each) and the three evaluation sets.

    Without `training_audio` only the evaluation sets and samples are rendered: the same ones, since
    their sentences and voices follow from the training sentences and the voices drawn for them.
    """
    train_sentences = unique_sentences(seed, train_count)
    seen = set(train_sentences)
    # Held-out sentences in training voices: a third of them of sentence structures training never had.
    structures = unique_sentences(seed + 2, eval_seen // 3, exclude=seen, stream=held_out_structures)
    general = unique_sentences(seed + 1, eval_seen - len(structures) + eval_held_out, exclude=seen | set(structures),
                               stream=lambda s: sentences(s, held_out=True))
    seen_text, held_out_text = structures + general[: eval_seen - len(structures)], general[-eval_held_out:]
    rng = random.Random(seed)
    train_dir = ROOT / "data" / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    for old in EVAL_DIR.glob("*.ogg"):
        old.unlink()
    jobs = _training_jobs(train_dir, train_sentences, rng, seed)
    # More sentences and voices under their own seed, so that everything drawn above stays as it was.
    extra = unique_sentences(seed + 3, extra_count, exclude=seen | set(seen_text) | set(held_out_text)
                            | set(everyday_sentences()))
    jobs += _training_jobs(train_dir, extra, random.Random(seed + 3), seed + 3, first=len(jobs))
    eval_jobs = [
        (EVAL_DIR / f"seen-{i:03d}.ogg", training_voice(rng), text, 0, False, "OPUS")
        for i, text in enumerate(seen_text)
    ] + [
        (EVAL_DIR / f"heldout-{i:03d}.ogg", held_out_voice(rng), text, 0, False, "OPUS")
        for i, text in enumerate(held_out_text)
    ] + [
        (EVAL_DIR / f"everyday-{i:03d}.ogg", held_out_voice(rng, HELD_OUT_VOICES[i % 2]), text, 0, False, "OPUS")
        for i, text in enumerate(everyday_sentences())
    ]
    with Pool(workers) as pool:
        train = pool.map(_render, jobs, chunksize=32) if training_audio else []
        evaluation = pool.map(_render, eval_jobs, chunksize=8)
    if training_audio:
        _write_manifest(ROOT / "data" / "train.jsonl", train)
    _write_manifest(EVAL_DIR / "demo-eval.jsonl", evaluation)
    for name, prefix in (("seen-voices", "seen-"), ("held-out-voice", "heldout-"), ("everyday", "everyday-")):
        subset = [e for e in evaluation if e["audio_filepath"].startswith(prefix)]
        _write_manifest(EVAL_DIR / f"demo-eval-{name}.jsonl", subset)
    write_samples(seen_text[QUICKSTART_SENTENCE], held_out_text[HELD_OUT_SAMPLE])
    hours = sum(e["duration"] for e in train) / 3600
    print(f"train: {len(train)} utterances, {hours:.2f} h; eval: {len(evaluation)} utterances")


def _training_jobs(directory: Path, texts: list[str], rng: random.Random, seed: int,
                   first: int = 0) -> list[tuple]:
    """Render jobs for training utterances, numbered from `first`, each voice drawn from `rng`."""
    return [(directory / f"{first + i:05d}.flac", training_voice(rng), text, seed * 100_003 + i, True, "PCM_16")
            for i, text in enumerate(texts)]


def everyday_sentences() -> list[str]:
    lines = (ROOT / "everyday.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def write_samples(seen_voice_text: str, held_out_text: str) -> None:
    """Two README samples, held-out sentences: one in a training voice, one in the held-out voice."""
    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for name, voice, text in (
        ("quickstart.wav", Voice("flite", "slt"), seen_voice_text),
        ("held-out-voice.wav", held_out_voice(random.Random(0)), held_out_text),
    ):
        audio = synthesise(voice, text)
        sf.write(SAMPLES_DIR / name, np.concatenate([np.zeros(4000, np.float32), audio, np.zeros(4000, np.float32)]),
                 RATE, subtype="PCM_16")
        (SAMPLES_DIR / name).with_suffix(".txt").write_text(text + "\n")


def _write_manifest(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-utterances", type=int, default=TRAIN_UTTERANCES)
    parser.add_argument("--extra-utterances", type=int, default=EXTRA_UTTERANCES)
    parser.add_argument("--eval-seen", type=int, default=150)
    parser.add_argument("--eval-held-out", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eval-only", action="store_true", help="render the evaluation sets and samples only")
    a = parser.parse_args()
    build(a.train_utterances, a.eval_seen, a.eval_held_out, a.seed, a.workers, training_audio=not a.eval_only,
          extra_count=a.extra_utterances)


if __name__ == "__main__":
    main()
