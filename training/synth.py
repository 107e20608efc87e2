"""Speech for the demo model, synthesised offline with Debian's TTS engines and augmented.

Voices: espeak-ng (accents x voice variants, speeds, pitches), flite's built-in voices and
festival's diphone and HTS voices. Two whole voices (festival's ked, flite's rms) never appear in
training.
"""

from __future__ import annotations

import io
import random
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import fftconvolve

RATE = 16000
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd", "en-gb-x-gbclan"]
# espeak-ng's human-sounding variants (not its robot, whisper or croak ones)
ESPEAK_VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 Alex Alicia Andrea Andy Annie Denis Gene Hugo "
    "Jacky Lee Marco Mario Michael Mike Nguyen Storm adam anika announcer antonio aunty belinda benjamin boris "
    "caleb david ed edward grandma grandpa gustave iven iven2 iven3 john linda max michel miguel norbert paul "
    "pedro quincy rob robert sandro shelby steph travis victor zac"
).split()
FLITE_VOICES = ["kal", "kal16", "awb", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "cmu_us_slt_arctic_hts"]
# Whole voices that never appear in training: the held-out-voice set speaks in the first, the
# hand-written everyday set in both.
HELD_OUT_VOICE = "festival:ked_diphone"
HELD_OUT_VOICES = (HELD_OUT_VOICE, "flite:rms")


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak, flite or festival
    name: str
    speed: float = 1.0  # relative speaking rate
    pitch: int = 50  # espeak only

    @property
    def family(self) -> str:
        """The voice without its rate/pitch settings (what the held-out split is about)."""
        return f"{self.engine}:{self.name}"


def training_voice(rng: random.Random) -> Voice:
    roll = rng.random()
    speed = rng.uniform(0.85, 1.2)
    if roll < 0.5:
        name = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(ESPEAK_VARIANTS)}"
        return Voice("espeak", name, speed, rng.randint(25, 75))
    if roll < 0.8:
        return Voice("flite", rng.choice(FLITE_VOICES), speed)
    return Voice("festival", rng.choice(FESTIVAL_VOICES), speed)


def held_out_voice(rng: random.Random, family: str = HELD_OUT_VOICE) -> Voice:
    engine, name = family.split(":")
    return Voice(engine, name, rng.uniform(0.9, 1.1))


def synthesise(voice: Voice, text: str) -> np.ndarray:
    """Mono float32 speech at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        if voice.engine == "espeak":
            words_per_minute = str(round(165 * voice.speed))
            cmd = ["espeak-ng", "-v", voice.name, "-s", words_per_minute, "-p", str(voice.pitch), "-w", str(out), text]
            subprocess.run(cmd, check=True, capture_output=True)
        elif voice.engine == "flite":
            stretch = f"duration_stretch={1 / voice.speed:.3f}"
            cmd = ["flite", "-voice", voice.name, "--setf", stretch, "-t", text, "-o", str(out)]
            subprocess.run(cmd, check=True, capture_output=True)
        else:
            setup = f"(voice_{voice.name}) (Parameter.set 'Duration_Stretch {1 / voice.speed:.3f})"
            subprocess.run(["text2wave", "-eval", setup, "-o", str(out)], input=text.encode(), check=True,
                           capture_output=True)
        samples, rate = sf.read(out, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return soxr.resample(mono, rate, RATE).astype(np.float32) if rate != RATE else mono


def room(rt60_s: float, drr_db: float, nrng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, then a diffuse tail that falls 60 dB in
    `rt60_s`, `drr_db` below the direct sound in energy (0-12 dB: a talker at arm's length from a
    phone or laptop; a far-field hall would be below 0)."""
    t = np.arange(int(RATE * rt60_s)) / RATE
    tail = nrng.standard_normal(t.size) * np.exp(-6.9 * t / rt60_s)
    tail[: int(RATE * 0.003)] = 0.0  # the first reflections arrive a few milliseconds after the direct sound
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    tail[0] = 1.0
    return (tail / np.sqrt(np.sum(tail**2))).astype(np.float32)


def augment(audio: np.ndarray, rng: random.Random) -> np.ndarray:
    """Speed, reverberation, gain, telephone band, noise at several SNRs, and leading/trailing silence."""
    nrng = np.random.default_rng(rng.randrange(2**32))
    if rng.random() < 0.5:  # speed (and pitch) perturbation
        audio = soxr.resample(audio, RATE, round(RATE * rng.uniform(0.85, 1.15))).astype(np.float32)
    if rng.random() < 0.25:  # a room: users speak to laptops and phones held away from them
        audio = fftconvolve(audio, room(rng.uniform(0.15, 0.7), rng.uniform(0.0, 12.0), nrng))[: audio.size]
        audio = audio.astype(np.float32)
    if rng.random() < 0.2:  # telephone: 8 kHz mu-law and back, as a phone call reaches the server
        narrow = soxr.resample(audio, RATE, 8000)
        buf = io.BytesIO()
        sf.write(buf, np.clip(narrow, -1, 1), 8000, format="RAW", subtype="ULAW")
        narrow, _ = sf.read(io.BytesIO(buf.getvalue()), format="RAW", subtype="ULAW", samplerate=8000,
                            channels=1, dtype="float32")
        audio = soxr.resample(narrow, 8000, RATE).astype(np.float32)
    peak = float(np.abs(audio).max()) or 1.0
    audio = audio / peak * 10 ** (rng.uniform(-20, -1) / 20)
    # Leading/trailing silence, but not always: a clip may start or end on a word, and a model that
    # never heard that drops the first and last words of such clips. A quarter start after a long
    # pause, as every utterance after the first in a stream does.
    lead = rng.choice([0.0, 0.0, 0.0, rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6),
                       rng.uniform(0.05, 0.6), rng.uniform(0.6, 1.5), rng.uniform(0.6, 1.5), rng.uniform(0.6, 1.5)])
    tail = rng.uniform(0.05, 0.6) if rng.random() < 0.7 else 0.0
    audio = np.concatenate([np.zeros(int(RATE * lead), np.float32), audio, np.zeros(int(RATE * tail), np.float32)])
    if rng.random() < 0.6:
        snr_db = rng.choice([30, 20, 15, 10, 5])
        noise = nrng.standard_normal(audio.size).astype(np.float32)
        if rng.random() < 0.5:  # pink-ish: low frequencies dominate, like rooms and cars
            noise = np.cumsum(noise) * 0.05
            noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
        speech_power = float(np.mean(audio**2)) + 1e-10
        noise *= np.sqrt(speech_power / (float(np.mean(noise**2)) + 1e-10) / 10 ** (snr_db / 10))
        audio = audio + noise
    return np.clip(audio, -1, 1).astype(np.float32)
