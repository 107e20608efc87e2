"""An English corpus of what voice agents and dictation hear, with an everyday vocabulary.

Sentence frames (commands, questions, statements, answers, fragments) whose open slots take any of
the ~2,000 most common nouns, verbs, adjectives and adverbs (`words.py`), plus numbers, times,
dates, amounts, names and places written out as words (the way a recogniser without inverse text
normalisation should emit them). A third of the sentences are runs of common words in random order
and many are two frames joined, so that no frame's wording can be learnt as a language model that
overrides the audio. Some frames never reach training: the evaluation keeps whole sentence
structures out as well as whole voices. Seeded, so corpus and split are reproducible.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

from training.words import lexicon

ONES = "zero one two three four five six seven eight nine".split()
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
MONTHS = "january february march april may june july august september october november december".split()
DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
NAMES = (
    "anna ben carlos diana emma frank grace henry isabel jack karen leo maria nathan olivia peter rachel sam "
    "tina victor wendy yusuf zoe james linda omar priya alex amy brian chloe daniel ella george hannah ivan "
    "julia kevin laura mike nina oscar paul rosa steve tom uma vera will lucy mark sarah david lisa chen ali "
    "fatima hugo ingrid kenji lena mateo noah sofia"
).split()
SURNAMES = (
    "smith johnson garcia brown miller davis wilson lopez taylor moore clark lewis walker young martin lee "
    "white harris thompson king wright scott green baker adams nelson hill campbell mitchell roberts carter "
    "phillips evans turner parker collins edwards stewart morris murphy cook rogers morgan cooper"
).split()
PLACES = [
    *"london paris boston chicago denver seattle madrid berlin toronto dublin austin miami tokyo sydney rome "
    "amsterdam vienna houston phoenix atlanta portland dallas oslo lisbon prague mexico canada france spain "
    "italy germany india china japan brazil texas california florida".split(),
    "new york", "los angeles", "san francisco", "las vegas", "hong kong", "new zealand", "south africa",
]
SITES = (
    "the airport, the station, the office, the hospital, the library, the hotel, downtown, the bank, the "
    "school, the park, the mall, the gym, the pharmacy, the post office, the city center, the beach, home, work"
).split(", ")
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "garage", "office", "hallway", "basement", "garden"]
WHEN = [
    "today", "tomorrow", "tonight", "later", "now", "right now", "this morning", "this afternoon", "this evening",
    "next week", "last week", "next month", "last year", "soon", "yesterday", "this weekend", "in a minute",
    "after lunch", "before dinner", "every day", "once a week",
]
OPENERS = ["", "", "", "", "okay ", "so ", "well ", "hey ", "oh ", "alright ", "actually ", "hi ", "hello ", "um "]
CLOSERS = ["", "", "", "", " please", " thanks", " thank you", " okay", " right", " for me", " again", " too"]
PRONOUNS = ["i", "you", "we", "they"]
THIRD = ["he", "she", "it", "my friend", "the manager", "your sister", "our neighbor", "the doctor"]
ANSWERS = ["please", "thanks", "thank you", "not really", "of course", "that is right", "go ahead", "not yet"]
CONJUNCTIONS = ["and", "but", "so", "because", "or", "then", "and then", "if", "when", "while", "although"]


def number(rng: random.Random, low: int = 0, high: int = 999) -> str:
    return say_number(rng.randint(low, high))


def say_number(n: int) -> str:
    """Cardinal number in words, 0 <= n < 1,000,000."""
    if n < 10:
        return ONES[n]
    if n < 20:
        return TEENS[n - 10]
    if n < 100:
        return TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + say_number(rest))
    rest = n % 1000
    return say_number(n // 1000) + " thousand" + ("" if rest == 0 else " " + say_number(rest))


def time_of_day(rng: random.Random) -> str:
    hour = say_number(rng.randint(1, 12))
    minute = rng.choice([0, 5, 10, 15, 20, 25, 30, 40, 45, 50, rng.randint(1, 59)])
    if minute == 0:
        spoken = f"{hour} o'clock" if rng.random() < 0.5 else hour
    elif minute < 10:
        spoken = f"{hour} oh {ONES[minute]}"
    else:
        spoken = f"{hour} {say_number(minute)}"
    return spoken + rng.choice(["", "", " in the morning", " in the evening", " a m", " p m", " tonight"])


def date(rng: random.Random) -> str:
    day, month = rng.choice([*ORDINALS, "twenty first", "twenty second", "thirtieth"]), rng.choice(MONTHS)
    return rng.choice([f"{month} {day}", f"the {day} of {month}", f"{rng.choice(DAYS)} {month} {day}",
                       f"next {rng.choice(DAYS)}", rng.choice(DAYS)])


def amount(rng: random.Random) -> str:
    whole = number(rng, 1, 2000)
    if rng.random() < 0.4:
        return f"{whole} {rng.choice(['dollars', 'euros', 'pounds'])} and {number(rng, 1, 99)} cents"
    return f"{whole} {rng.choice(['dollars', 'euros', 'pounds', 'minutes', 'hours', 'days', 'miles', 'percent'])}"


def digits(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(ONES) for _ in range(count))


def person(rng: random.Random) -> str:
    return rng.choice([rng.choice(NAMES), f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"])


def place(rng: random.Random) -> str:
    return rng.choice([rng.choice(PLACES), rng.choice(SITES)])


def _pick(words: tuple[str, ...], rng: random.Random) -> str:
    """Frequent words more often, every word sometimes (index drawn with density falling as 1/sqrt)."""
    return words[int(len(words) * rng.random() ** 2)]


def noun(r: random.Random) -> str:
    return _pick(lexicon().nouns, r)


def verb(r: random.Random) -> str:
    return _pick(lexicon().verbs, r)


def adjective(r: random.Random) -> str:
    return _pick(lexicon().adjectives, r)


def adverb(r: random.Random) -> str:
    return _pick(lexicon().adverbs, r)


def thing(r: random.Random) -> str:
    """A noun phrase."""
    roll = r.random()
    if roll < 0.35:
        return f"the {noun(r)}"
    if roll < 0.55:
        return f"{r.choice(['my', 'your', 'our', 'their', 'his', 'her', 'this', 'that'])} {noun(r)}"
    if roll < 0.7:
        return f"a {adjective(r)} {noun(r)}" if r.random() < 0.5 else f"the {adjective(r)} {noun(r)}"
    if roll < 0.8:
        return f"some {noun(r)}"
    if roll < 0.9:
        return f"{number(r, 2, 30)} {noun(r)}"
    return person(r)


Frame = Callable[[random.Random], str]
# Written for this corpus; each slot draws from the lexicon or the number/name/place helpers.
FRAMES: list[Frame] = [
    lambda r: f"can you {verb(r)} {thing(r)}",
    lambda r: f"please {verb(r)} {thing(r)} {r.choice(WHEN)}",
    lambda r: f"i need to {verb(r)} {thing(r)}",
    lambda r: f"where is {thing(r)}",
    lambda r: f"do you have {thing(r)}",
    lambda r: f"{thing(r)} is {adjective(r)}",
    lambda r: f"it is {r.choice(['very ', 'really ', 'quite ', 'too ', ''])}{adjective(r)} {r.choice(WHEN)}",
    lambda r: f"i think {thing(r)} is {adjective(r)}",
    lambda r: f"we should {verb(r)} {thing(r)} {adverb(r)}",
    lambda r: f"{r.choice(['yes', 'no', 'yeah', 'sure', 'okay'])} that is {adjective(r)}",
    lambda r: f"no i do not want {thing(r)}",
    lambda r: f"how do i {verb(r)} {thing(r)}",
    lambda r: f"what is the best way to {verb(r)} {thing(r)}",
    lambda r: f"i am looking for {thing(r)} near {place(r)}",
    lambda r: f"{thing(r)} was {adjective(r)} {r.choice(WHEN)}",
    lambda r: f"could you tell me about {thing(r)}",
    lambda r: f"there is {thing(r)} in the {r.choice(ROOMS)}",
    lambda r: f"{r.choice(PRONOUNS)} will {verb(r)} it {r.choice(WHEN)}",
    lambda r: f"please do not {verb(r)} {thing(r)}",
    lambda r: f"{noun(r)} and {noun(r)}",
    lambda r: f"{adjective(r)} {noun(r)}",
    lambda r: f"why is {thing(r)} so {adjective(r)}",
    lambda r: f"when can we {verb(r)} {thing(r)}",
    lambda r: f"let me {verb(r)} that {adverb(r)}",
    lambda r: f"{r.choice(THIRD)} said {thing(r)} was {adjective(r)}",
    lambda r: f"{r.choice(THIRD)} wants to {verb(r)} {thing(r)}",
    lambda r: f"{r.choice(PRONOUNS)} are going to {verb(r)} {thing(r)} {r.choice(WHEN)}",
    lambda r: f"thank you for {thing(r)}",
    lambda r: f"sorry i did not {verb(r)} that",
    lambda r: f"that sounds {adjective(r)}",
    lambda r: f"tell me more about {thing(r)}",
    lambda r: f"i would like {thing(r)} please",
    lambda r: f"who is going to {verb(r)} {thing(r)}",
    lambda r: f"is it {adjective(r)} to {verb(r)} {thing(r)}",
    lambda r: f"{verb(r)} {thing(r)} and {verb(r)} {thing(r)}",
    lambda r: f"have you seen {thing(r)}",
    lambda r: f"i {adverb(r)} {verb(r)} {thing(r)}",
    lambda r: f"{r.choice(PRONOUNS)} {r.choice(['can', 'could', 'should', 'might', 'must'])} {verb(r)} {thing(r)}",
    lambda r: f"what do you think about {thing(r)}",
    lambda r: f"set a timer for {number(r, 1, 90)} minutes",
    lambda r: f"wake me up at {time_of_day(r)}",
    lambda r: f"the meeting is on {date(r)} at {time_of_day(r)}",
    lambda r: f"my {r.choice(['phone', 'account', 'order', 'card', 'room'])} number is {digits(r, r.randint(3, 10))}",
    lambda r: f"the total comes to {amount(r)}",
    lambda r: f"i would like to book {thing(r)} for {number(r, 1, 12)} people on {date(r)}",
    lambda r: f"turn {r.choice(['on', 'off', 'up', 'down'])} the {noun(r)} in the {r.choice(ROOMS)}",
    lambda r: f"what is the weather like in {place(r)} {r.choice(WHEN)}",
    lambda r: f"how long does it take to get to {place(r)}",
    lambda r: f"call {person(r)} {r.choice(WHEN)}",
    lambda r: f"send a message to {person(r)} saying {r.choice(PRONOUNS)} will {verb(r)} {thing(r)}",
    lambda r: f"my name is {person(r)} and i live in {place(r)}",
    lambda r: f"{thing(r)} costs {amount(r)}",
    lambda r: f"remind me to {verb(r)} {thing(r)} on {date(r)}",
    lambda r: f"{person(r)} will meet you at {place(r)} around {time_of_day(r)}",
    lambda r: f"the temperature is {number(r, 0, 40)} degrees",
    lambda r: f"i paid {amount(r)} for {thing(r)}",
    lambda r: f"how much is {thing(r)}",
    lambda r: f"{r.choice(['yes', 'no'])} {r.choice(ANSWERS)}",
    lambda r: f"{r.choice(['is', 'was', 'are'])} there {thing(r)} {r.choice(['here', 'there', 'at ' + place(r)])}",
    lambda r: f"how many {noun(r)} do we {r.choice(['have', 'need', 'want'])}",
    lambda r: f"{adverb(r)} {verb(r)} {thing(r)}",
    lambda r: f"i {r.choice(['lost', 'found', 'forgot', 'left', 'broke', 'fixed', 'got'])} {thing(r)} {r.choice(WHEN)}",
    lambda r: f"did you {verb(r)} {thing(r)} {r.choice(WHEN)}",
    lambda r: f"{r.choice(THIRD)} {r.choice(['is', 'was'])} {r.choice(['not ', ''])}{adjective(r)}",
    lambda r: f"you {r.choice(['can', 'should', 'need to', 'have to'])} {verb(r)} the {noun(r)} {adverb(r)}",
    lambda r: f"what time does {thing(r)} {r.choice(['start', 'open', 'close', 'arrive', 'leave', 'end'])}",
    lambda r: f"{r.choice(['just', 'only', 'maybe', 'probably'])} {thing(r)}",
    lambda r: f"i {r.choice(['like', 'love', 'hate', 'want', 'need', 'have'])} {thing(r)}",
    lambda r: f"the {noun(r)} {r.choice(['is', 'was', 'will be'])} in {place(r)} on {date(r)}",
    lambda r: f"{r.choice(['could', 'would', 'will'])} you {verb(r)} {thing(r)} for {person(r)}",
]
# Kept out of training entirely: whole sentence structures the evaluation hears for the first time.
HELD_OUT_FRAMES = frozenset({4, 13, 24, 33, 46, 61, 66})


def common_words(rng: random.Random) -> str:
    """A run of common words in random order: each word's sound and spelling with no sentence to guess from."""
    common = lexicon().common
    return " ".join(_pick(common, rng) for _ in range(rng.randint(2, 9)))


def sentence(rng: random.Random, frames: list[Frame]) -> str:
    roll = rng.random()
    if roll < 0.3:
        return common_words(rng)
    body = rng.choice(frames)(rng)
    if roll < 0.5:
        body += f" {rng.choice(CONJUNCTIONS)} {rng.choice(frames)(rng)}"
    return f"{rng.choice(OPENERS)}{body}{rng.choice(CLOSERS)}"


def tidy(text: str) -> str:
    """One space between words, and "an" before a vowel sound."""
    return AN.sub(r"an \1", " ".join(text.split()))


AN = re.compile(r"\ba (?!uni|use|usu|one|eu)([aeiou])")


def sentences(seed: int, held_out: bool = False) -> Iterator[str]:
    """An endless, seeded stream of sentences: training's frames, or (held_out) every frame."""
    rng = random.Random(seed)
    frames = [f for i, f in enumerate(FRAMES) if held_out or i not in HELD_OUT_FRAMES]
    while True:
        yield tidy(sentence(rng, frames))


def held_out_structures(seed: int) -> Iterator[str]:
    """Sentences of the held-out frames only."""
    rng = random.Random(seed)
    frames = [FRAMES[i] for i in sorted(HELD_OUT_FRAMES)]
    while True:
        yield tidy(f"{rng.choice(OPENERS)}{rng.choice(frames)(rng)}{rng.choice(CLOSERS)}")


def unique_sentences(seed: int, count: int, exclude: set[str] | frozenset[str] = frozenset(),
                     stream: Callable[[int], Iterator[str]] = sentences) -> list[str]:
    """`count` distinct sentences of `stream`, none of them in `exclude`."""
    out: dict[str, None] = {}
    for text in stream(seed):
        if text not in exclude:
            out.setdefault(text)
        if len(out) == count:
            return list(out)
    raise AssertionError("unreachable")
