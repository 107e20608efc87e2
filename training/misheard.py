"""Find the boosting tests' misheard word for a new demo model (`tests/conftest.py`'s `MISHEARD`).

The tests need a clip of the seen-voice set in which the model writes one wrong word where the voice
says another, and in which boosting the said word puts right that word and nothing else. Each model
mishears different words, so every swap of `demo.nemo` picks again: this lists the candidates, the
best (the boosted text equals the reference, or is closest to it) first. Check the pick with
`pytest tests/riva/test_boosting.py tests/engine/nemo/test_boosting.py tests/http`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kaldialign

from parakeet_serve.audio import AudioFormat, decode_audio
from parakeet_serve.engine import load_engine
from parakeet_serve.engine.base import Engine
from parakeet_serve.evaluation import ManifestEntry, error_counts, normalise, read_manifest
from parakeet_serve.word_boost import WordBoost

SEEN = Path(__file__).resolve().parent.parent / "service" / "parakeet_serve" / "eval" / "demo-eval-seen-voices.jsonl"


@dataclass(frozen=True)
class Candidate:
    entry: ManifestEntry
    said: str
    heard: str
    plain: str
    boosted: str

    def fixed(self) -> bool:
        """Boosting `said` changed the misheard word, and only it, into `said`."""
        right = [self.said if w == self.heard else w for w in self.plain.split()]
        return self.boosted.split() == right


def substitutions(reference: str, hypothesis: str) -> Iterator[tuple[str, str]]:
    """(said, heard) for each word the hypothesis swaps for another, where neither word occurs elsewhere in
    the hypothesis (the tests tell the two apart by which one the text holds)."""
    ref, hyp = normalise(reference).split(), normalise(hypothesis).split()
    for said, heard in kaldialign.align(ref, hyp, "*"):
        if "*" not in (said, heard) and said != heard and hyp.count(heard) == 1 and said not in hyp:
            yield said, heard


def candidates(engine: Engine, entries: list[ManifestEntry], boost: float) -> list[Candidate]:
    """The clips' single-word mishearings that boosting the said word by `boost` puts right alone."""
    audios = [decode_audio(e.audio.read_bytes(), AudioFormat(), target_rate=engine.sample_rate,
                           max_seconds=60).mono()
              for e in entries]
    plains = [normalise(t.best.text) for t in engine.transcribe(audios)]
    found = []
    for entry, audio, plain in zip(entries, audios, plains, strict=True):
        for said, heard in substitutions(entry.text, plain):
            boosted = engine.transcribe([audio], boosts=[WordBoost(((said, boost),))])[0].best.text
            found.append(Candidate(entry, said, heard, plain, normalise(boosted)))
    return sorted((c for c in found if c.fixed()), key=lambda c: error_counts(c.entry.text, c.boosted)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a model id or .nemo file (default: the shipped demo)")
    parser.add_argument("--manifest", type=Path, default=SEEN)
    parser.add_argument("--boost", type=float, default=20.0, help="the boost the tests ask for")
    options = parser.parse_args()
    for c in candidates(load_engine(options.model), read_manifest(options.manifest), options.boost):
        errors = error_counts(c.entry.text, c.boosted)[0]
        print(f"{c.entry.audio.name}: said {c.said!r}, heard {c.heard!r}; boosted, {errors} word errors left: "
              f"{c.boosted}")


if __name__ == "__main__":
    main()
