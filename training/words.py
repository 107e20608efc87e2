"""Everyday English words for the demo corpus, by part of speech.

The 5,000 most frequent English words (`wordfreq`), kept if Debian's `wamerican` spells them so (it
drops fragments such as "thats"), each given the part of speech WordNet (`wordnet-base`) tags it
with most often in its sense-tagged corpus. Closed-class words (pronouns, prepositions, auxiliaries)
are listed here, since the sentence frames place them themselves.

    python -m training.words     # derives training/lexicon.json (needs wordfreq and wordnet-base)

The derived lexicon is committed, so the corpus (and the GPU recipe's tokenizer) need neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

LEXICON = Path(__file__).resolve().parent / "lexicon.json"
DICTIONARY = Path("/usr/share/dict/american-english")
WORDNET = Path("/usr/share/wordnet")
COMMON = 5000
CLOSED = set(
    "a an the this that these those my your his her its our their me him us them i you he she it we they "
    "and or but so if because than then as of to in on at by for from with about into over under after before "
    "between through during without within around up down out off near is am are was were be been being do does "
    "did have has had will would shall should can could may might must not no yes what which who whom whose "
    "where when why how all any some each every both either neither there here very too also just only".split()
)
# Words a demo for a product should not be taught to write.
UNWANTED = set("sex sexy sexual fuck fucking fucked shit bitch damn ass porn nude naked".split())


@dataclass(frozen=True)
class Lexicon:
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]  # base forms
    adjectives: tuple[str, ...]
    adverbs: tuple[str, ...]
    common: tuple[str, ...]  # every kept word, most frequent first, closed-class and inflected forms too


def _tagged_counts(pos: str) -> dict[str, int]:
    """lemma -> how often WordNet's sense-tagged corpus used it as this part of speech (+1 for being listed)."""
    counts = {}
    for line in (WORDNET / f"index.{pos}").read_text().splitlines():
        if line.startswith(" "):
            continue  # the licence header
        fields = line.split()
        pointers = int(fields[3])
        counts[fields[0]] = int(fields[5 + pointers]) + 1
    return counts


@cache
def lexicon() -> Lexicon:
    return Lexicon(**{k: tuple(v) for k, v in json.loads(LEXICON.read_text()).items()})


def derive(size: int = COMMON) -> Lexicon:
    import wordfreq

    spelled = {w.strip() for w in DICTIONARY.read_text().splitlines() if w.strip().islower()}
    kept = []
    for word in wordfreq.top_n_list("en", size * 2):
        if word in spelled and word.replace("'", "").isalpha() and word not in UNWANTED:
            kept.append(word)
        if len(kept) == size:
            break
    tables = {pos: _tagged_counts(pos) for pos in ("noun", "verb", "adj", "adv")}
    by_pos: dict[str, list[str]] = {pos: [] for pos in tables}
    for word in kept:
        if word in CLOSED or len(word) < 2:
            continue
        counts = {pos: table.get(word, 0) for pos, table in tables.items()}
        pos = max(counts, key=counts.get)
        if counts[pos]:
            by_pos[pos].append(word)
    return Lexicon(tuple(by_pos["noun"]), tuple(by_pos["verb"]), tuple(by_pos["adj"]), tuple(by_pos["adv"]),
                   tuple(kept))


if __name__ == "__main__":
    LEXICON.write_text(json.dumps(asdict(derive()), indent=0) + "\n")
    print(f"{LEXICON}: {len(lexicon().common)} words")
