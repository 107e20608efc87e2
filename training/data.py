"""Build the demo model's data: training utterances and the held-out evaluation set.

Training: sentences from `text.py` spoken by the training voices, augmented, as FLAC + a NeMo
manifest under `training/data/`. Evaluation (shipped in the package): sentences never used in
training, spoken by training voices and by the held-out voice, without augmentation, as Ogg/Opus.
"""

from __future__ import annotations

import argparse
import json
import random
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf

from training.synth import HELD_OUT_VOICE, RATE, Voice, augment, held_out_voice, synthesise, training_voice
from training.text import unique_sentences

ROOT = Path(__file__).resolve().parent
EVAL_DIR = ROOT.parent / "service" / "parakeet_serve" / "eval"
SAMPLES_DIR = ROOT.parent / "service" / "parakeet_serve" / "samples"
# The quickstart's sample: a held-out sentence (this index among the seen-voice ones) picked because
# the shipped model transcribes it right (as it does 87 of the 150 in training voices).
QUICKSTART_SENTENCE = 47


def _render(job: tuple[Path, Voice, str, int, bool, str]) -> dict:
    path, voice, text, seed, noisy, subtype = job
    audio = synthesise(voice, text)
    if noisy:
        audio = augment(audio, random.Random(seed))
    fmt = "OGG" if subtype == "OPUS" else "FLAC"
    sf.write(path, audio, RATE, format=fmt, subtype=subtype)
    return {"audio_filepath": path.name if subtype == "OPUS" else str(path), "duration": round(len(audio) / RATE, 3),
            "text": text, "voice": voice.family}


def build(train_count: int, sentence_count: int, eval_seen: int, eval_held_out: int, seed: int, workers: int) -> None:
    train_sentences = unique_sentences(seed, sentence_count)
    eval_sentences = unique_sentences(seed + 1, eval_seen + eval_held_out, exclude=set(train_sentences))
    rng = random.Random(seed)
    train_dir = ROOT / "data" / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    jobs = [
        (train_dir / f"{i:05d}.flac", training_voice(rng), train_sentences[i % sentence_count], seed * 100_003 + i,
         True, "PCM_16")
        for i in range(train_count)
    ]
    eval_jobs = [
        (EVAL_DIR / f"seen-{i:03d}.ogg", training_voice(rng), text, 0, False, "OPUS")
        for i, text in enumerate(eval_sentences[:eval_seen])
    ] + [
        (EVAL_DIR / f"heldout-{i:03d}.ogg", held_out_voice(rng), text, 0, False, "OPUS")
        for i, text in enumerate(eval_sentences[eval_seen:])
    ]
    with Pool(workers) as pool:
        train = pool.map(_render, jobs, chunksize=32)
        evaluation = pool.map(_render, eval_jobs, chunksize=8)
    _write_manifest(ROOT / "data" / "train.jsonl", train)
    _write_manifest(EVAL_DIR / "demo-eval.jsonl", evaluation)
    held_out = [e for e in evaluation if e["voice"] == HELD_OUT_VOICE]
    _write_manifest(EVAL_DIR / "demo-eval-seen-voices.jsonl", [e for e in evaluation if e not in held_out])
    _write_manifest(EVAL_DIR / "demo-eval-held-out-voice.jsonl", held_out)
    write_samples(eval_sentences[QUICKSTART_SENTENCE], eval_sentences[eval_seen])
    hours = sum(e["duration"] for e in train) / 3600
    print(f"train: {len(train)} utterances, {hours:.2f} h; eval: {len(evaluation)} utterances")


def write_samples(seen_voice_text: str, held_out_text: str) -> None:
    """Two README samples, held-out sentences: one in a training voice, one in the held-out voice."""
    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for name, voice, text in (
        ("train-departure.wav", Voice("flite", "slt"), seen_voice_text),
        ("call-back-later.wav", held_out_voice(random.Random(0)), held_out_text),
    ):
        audio = synthesise(voice, text)
        sf.write(SAMPLES_DIR / name, np.concatenate([np.zeros(4000, np.float32), audio, np.zeros(4000, np.float32)]),
                 RATE, subtype="PCM_16")
        (SAMPLES_DIR / name).with_suffix(".txt").write_text(text + "\n")


def _write_manifest(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-utterances", type=int, default=9000)
    parser.add_argument("--train-sentences", type=int, default=7000)
    parser.add_argument("--eval-seen", type=int, default=150)
    parser.add_argument("--eval-held-out", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    a = parser.parse_args()
    build(a.train_utterances, a.train_sentences, a.eval_seen, a.eval_held_out, a.seed, a.workers)


if __name__ == "__main__":
    main()
