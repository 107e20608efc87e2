"""An English corpus of what voice agents and dictation hear, generated from templates.

Numbers, times, dates, amounts, names, short commands, questions and everyday sentences, all
written out as words (the way a recogniser without inverse text normalisation should emit them).
Seeded, so the corpus and its train/evaluation split are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

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
    "tina victor wendy yusuf zoe james linda omar priya"
).split()
SURNAMES = "smith johnson garcia brown miller davis wilson lopez taylor moore clark lewis walker young".split()
PLACES = [
    "london", "paris", "boston", "chicago", "denver", "seattle", "madrid", "berlin", "toronto", "dublin", "austin",
    "miami", "the airport", "the station", "the office", "the hospital", "the library", "the hotel", "downtown",
]
ITEMS = (
    "coffee tea water pizza salad sandwich ticket table room car taxi package order invoice report meeting "
    "appointment reservation flight train bus prescription battery charger laptop phone"
).split()
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "garage", "office", "hallway", "basement", "garden"]
DEVICES = "lights heating music television fan alarm radio oven dishwasher".split()
ADJECTIVES = "new old small large quick early late cold warm quiet busy cheap expensive next last".split()
COLORS = "red blue green black white yellow silver grey".split()
UNITS = "dollars euros pounds minutes hours days weeks percent miles kilometers".split()
REPLIES = ["yes", "no", "okay", "sure", "thank you"]
FIELDS = ["name", "number", "address", "date"]
VERBS = "call book cancel check send open close find order schedule confirm change move reset".split()


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
    return spoken + rng.choice(["", " in the morning", " in the evening", " a m", " p m"])


def date(rng: random.Random) -> str:
    day, month = rng.choice([*ORDINALS, "twenty first", "twenty second", "thirtieth"]), rng.choice(MONTHS)
    return rng.choice([f"{month} {day}", f"the {day} of {month}", f"{rng.choice(DAYS)} {month} {day}"])


def amount(rng: random.Random) -> str:
    whole = number(rng, 1, 2000)
    if rng.random() < 0.4:
        return f"{whole} {rng.choice(['dollars', 'euros', 'pounds'])} and {number(rng, 1, 99)} cents"
    return f"{whole} {rng.choice(UNITS)}"


def digits(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(ONES) for _ in range(count))


def person(rng: random.Random) -> str:
    return rng.choice([rng.choice(NAMES), f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"])


# Each template draws its slots from the generator; the mix covers the kinds of speech listed above.
TEMPLATES: list[Callable[[random.Random], str]] = [
    lambda r: f"please {r.choice(VERBS)} the {r.choice(ITEMS)} for {person(r)}",
    lambda r: f"can you {r.choice(VERBS)} my {r.choice(ADJECTIVES)} {r.choice(ITEMS)}",
    lambda r: f"set a timer for {number(r, 1, 90)} minutes",
    lambda r: f"wake me up at {time_of_day(r)}",
    lambda r: f"the meeting is on {date(r)} at {time_of_day(r)}",
    lambda r: f"my phone number is {digits(r, r.randint(7, 10))}",
    lambda r: f"my account number is {digits(r, r.randint(4, 8))}",
    lambda r: f"the total comes to {amount(r)}",
    lambda r: f"i would like to book a {r.choice(ITEMS)} for {number(r, 1, 12)} people on {r.choice(DAYS)}",
    lambda r: f"turn {r.choice(['on', 'off'])} the {r.choice(DEVICES)} in the {r.choice(ROOMS)}",
    lambda r: f"what is the weather like in {r.choice(PLACES)} {r.choice(['today', 'tomorrow', 'this weekend'])}",
    lambda r: f"how long does it take to get to {r.choice(PLACES)}",
    lambda r: f"call {person(r)} {r.choice(['now', 'back later', 'at home', 'at work'])}",
    lambda r: f"send a message to {person(r)} saying i will be {number(r, 2, 40)} minutes late",
    lambda r: f"is there a {r.choice(ADJECTIVES)} {r.choice(ITEMS)} near {r.choice(PLACES)}",
    lambda r: f"my name is {person(r)} and i live in {r.choice(PLACES)}",
    lambda r: f"the {r.choice(COLORS)} {r.choice(ITEMS)} costs {amount(r)}",
    lambda r: f"we need {number(r, 2, 50)} more {r.choice(ITEMS)}s by {r.choice(DAYS)}",
    lambda r: f"{r.choice(REPLIES)} {r.choice(['that works', 'please', 'that is fine', 'go ahead', 'not now'])}",
    lambda r: f"remind me to {r.choice(VERBS)} the {r.choice(ITEMS)} on {date(r)}",
    lambda r: f"the train to {r.choice(PLACES)} leaves at {time_of_day(r)} from platform {number(r, 1, 20)}",
    lambda r: f"what time does the {r.choice(ITEMS)} {r.choice(['arrive', 'open', 'close', 'start'])}",
    lambda r: f"i paid {amount(r)} for the {r.choice(ITEMS)} last {r.choice(DAYS)}",
    lambda r: f"{person(r)} will meet you at {r.choice(PLACES)} around {time_of_day(r)}",
    lambda r: f"play some {r.choice(['quiet', 'loud', 'relaxing', 'happy'])} music in the {r.choice(ROOMS)}",
    lambda r: f"the temperature is {number(r, 0, 40)} degrees and it feels {r.choice(['cold', 'warm', 'hot'])}",
    lambda r: f"order {number(r, 1, 9)} {r.choice(ITEMS)}s and {number(r, 1, 9)} {r.choice(ITEMS)}s",
    lambda r: f"my flight number is {r.choice(COLORS)} {digits(r, 3)} on {date(r)}",
    lambda r: f"how much is a {r.choice(ITEMS)} to {r.choice(PLACES)}",
    lambda r: f"please {r.choice(['repeat', 'spell', 'confirm'])} the {r.choice(FIELDS)}",
]


def sentences(seed: int) -> Iterator[str]:
    """An endless, seeded stream of sentences."""
    rng = random.Random(seed)
    while True:
        yield " ".join(rng.choice(TEMPLATES)(rng).split())


def unique_sentences(seed: int, count: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """`count` distinct sentences, none of them in `exclude`."""
    out: dict[str, None] = {}
    for sentence in sentences(seed):
        if sentence not in exclude:
            out.setdefault(sentence)
        if len(out) == count:
            return list(out)
    raise AssertionError("unreachable")
