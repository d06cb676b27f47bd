#!/usr/bin/env python3
"""Writes the small HelpSteer-shaped sample that ships in data/helpsteer-sample/.

Same schema and format as nvidia/HelpSteer on Hugging Face: gzip'd JSON lines
{prompt, response, helpfulness, correctness, coherence, complexity, verbosity},
integer ratings 0-4, 2-4 consecutive responses per prompt.  The ratings carry
a learnable signal so that the tiny pipeline has something to learn:

  helpfulness  high when the response states the question's answer keyword,
               higher still with an explanation; low for evasive answers;
  correctness  high for the right answer, low for a wrong one;
  coherence    low for rambling responses made of unrelated filler;
  complexity   rises with the number of explanation sentences;
  verbosity    rises with the response length in words.

Lengths: responses of 5-60 words; with the default prompt template most
training sequences stay under 200 tiny-tokenizer tokens (a few exceed the tiny
config's max_length, so too-long dropping is exercised too).

Deterministic: a fixed seed, Python's stdlib only, gzip with mtime 0.
tests/check_pairs.c and tests/check_sequences.c assert counts taken from this
exact output: update them when this script changes.
Usage: python3 tests/make_sample_data.py [OUT_DIR]   (default data/helpsteer-sample)
"""
import gzip
import io
import json
import os
import random
import sys

SEED = 20231128
N_TRAIN_PROMPTS = 100
N_VALID_PROMPTS = 20

# (question, answer keyword, wrong answer, explanation sentences)
FACTS = [
    ("What is the capital of France?", "Paris", "Lyon",
     ["It has been the seat of the French government for centuries.",
      "The city sits on the river Seine in the north of the country.",
      "About two million people live within the city limits."]),
    ("At what temperature does water boil at sea level?", "100 degrees Celsius", "80 degrees Celsius",
     ["That is 212 degrees on the Fahrenheit scale.",
      "At higher altitude the air pressure is lower, so water boils sooner.",
      "Adding salt raises the boiling point only a little."]),
    ("Which planet is closest to the Sun?", "Mercury", "Venus",
     ["It completes one orbit in about 88 days.",
      "It has almost no atmosphere to hold heat.",
      "Its surface is covered with craters, much like the Moon."]),
    ("How many legs does a spider have?", "eight", "six",
     ["Insects have six legs, which is one way to tell them apart.",
      "Spiders belong to the arachnids, together with scorpions and mites.",
      "Each leg has seven segments."]),
    ("What gas do plants take in for photosynthesis?", "carbon dioxide", "oxygen",
     ["They take it in through small pores in their leaves.",
      "Using sunlight, they turn it and water into sugar.",
      "Oxygen is released as a by-product of the process."]),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare", "Charles Dickens",
     ["It was probably written in the middle of the 1590s.",
      "The story is set in the Italian city of Verona.",
      "It is one of the most performed plays in the world."]),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", "the Atlantic Ocean",
     ["It covers about a third of the surface of the planet.",
      "Its deepest point is the Mariana Trench.",
      "It stretches from the Arctic in the north to the Southern Ocean."]),
    ("How many days are in a leap year?", "366", "365",
     ["The extra day is added to February.",
      "Leap years keep the calendar in step with the orbit of the Earth.",
      "Most years divisible by four are leap years."]),
    ("What is the chemical symbol for gold?", "Au", "Go",
     ["The symbol comes from the Latin word aurum.",
      "Gold is a dense, soft and shiny metal.",
      "It does not rust, which is why old gold coins still shine."]),
    ("Which organ pumps blood through the human body?", "the heart", "the liver",
     ["It beats around seventy times a minute at rest.",
      "It has four chambers: two atria and two ventricles.",
      "Blood leaves it through the arteries and returns through the veins."]),
    ("What is the freezing point of water in Fahrenheit?", "32 degrees", "0 degrees",
     ["On the Celsius scale the same point is zero.",
      "Salt water freezes at a lower temperature.",
      "The scale was proposed by Daniel Fahrenheit in 1724."]),
    ("What is the tallest mountain above sea level?", "Mount Everest", "K2",
     ["It rises to about 8,849 metres.",
      "It lies on the border between Nepal and China.",
      "The first confirmed ascent was in 1953."]),
    ("How many continents are there?", "seven", "five",
     ["They are Africa, Antarctica, Asia, Australia, Europe, North America and South America.",
      "Some traditions count the Americas as one continent.",
      "Asia is the largest of them by area and population."]),
    ("What is the main ingredient of guacamole?", "avocado", "tomato",
     ["The avocado is mashed and mixed with lime juice and salt.",
      "Onion, chili and coriander are common additions.",
      "The dish comes from Mexico."]),
    ("Which language has the most native speakers?", "Mandarin Chinese", "English",
     ["Close to a billion people speak it as a first language.",
      "It is a tonal language with four main tones.",
      "Spanish and English follow it in the ranking."]),
    ("What is the square root of 81?", "9", "8",
     ["Nine times nine is eighty-one.",
      "Negative nine is also a square root, but the principal root is positive.",
      "81 is also three to the fourth power."]),
    ("What do bees make from nectar?", "honey", "wax",
     ["They store the nectar and let water evaporate from it.",
      "Enzymes from the bees change the sugars along the way.",
      "A hive can produce many kilograms in a good season."]),
    ("Which metal is liquid at room temperature?", "mercury", "tin",
     ["It was once common in thermometers.",
      "Its vapour is toxic, so it must be handled with care.",
      "Gallium melts just above room temperature, in a warm hand."]),
    ("What is the longest river in South America?", "the Amazon", "the Orinoco",
     ["It carries more water than any other river.",
      "Its basin covers a large part of Brazil.",
      "It flows from the Andes to the Atlantic Ocean."]),
    ("How many minutes are in an hour?", "60", "100",
     ["The sixty-based count goes back to ancient Babylon.",
      "Each minute has sixty seconds as well.",
      "A day therefore has 1,440 minutes."]),
    ("Which animal is known as the king of the jungle?", "the lion", "the tiger",
     ["Lions actually live mostly in grassland and savanna.",
      "They are the only cats that live in groups, called prides.",
      "A male lion's roar can be heard kilometres away."]),
    ("What is the hardest natural material?", "diamond", "granite",
     ["It is a form of pure carbon.",
      "Its atoms are bound in a very strong crystal lattice.",
      "That is why it is used in cutting tools."]),
    ("In which year did humans first land on the Moon?", "1969", "1972",
     ["The mission was Apollo 11.",
      "Neil Armstrong and Buzz Aldrin walked on the surface.",
      "Michael Collins stayed in orbit in the command module."]),
    ("What is the primary source of energy for the Earth?", "the Sun", "the Moon",
     ["Sunlight drives the weather and the water cycle.",
      "Plants capture its energy through photosynthesis.",
      "Fossil fuels store energy that came from it long ago."]),
    ("How many sides does a hexagon have?", "six", "eight",
     ["Bees build their honeycomb cells in this shape.",
      "A regular one has interior angles of 120 degrees.",
      "The name comes from the Greek word for six."]),
]

STYLES = [
    "{q}",
    "Quick question: {q}",
    "Can you help me with this? {q}",
    "I am studying for a quiz. {q} Please answer briefly.",
    "My friend and I disagree about something. {q} Who is right?",
    "{q} Explain your answer so that a ten year old understands it.",
    "I came across a question I could not answer. {q} A short explanation would help.",
    "Answer the following question in one or two sentences. {q}",
    ("We are writing a pub quiz and want every answer to be right.\n\n"
     "Next question: {q}\n\nPlease give the answer and say why."),
]

FILLER = [
    "That is a very interesting thing to think about.",
    "Many people wonder about this from time to time.",
    "There are a lot of books on topics like this one.",
    "It is always good to stay curious about the world.",
    "Learning new facts can be fun and rewarding.",
    "You can find more details in an encyclopedia.",
    "Teachers often ask questions like this one.",
    "It helps to write things down when you study.",
    "Some facts are easier to remember than others.",
    "Quizzes are a great way to practise.",
    "I hope this helps you with your question.",
    "Feel free to ask if anything is unclear.",
]

EVASIVE = [
    "I am not completely sure about that.",
    "That is hard to say without looking it up.",
    "I would rather not guess on this one.",
    "Different sources might say different things.",
]


def clamp(x):
    return max(0, min(4, x))


def verbosity_of(words):
    for level, limit in enumerate((10, 18, 28, 40)):
        if words < limit:
            return level
    return 4


def make_response(rng, answer, wrong, explanations):
    """One response and its ratings, from a randomly chosen kind."""
    kind = rng.choices(["answer", "explained", "detailed", "wrong", "evasive", "rambling"],
                       weights=[3, 3, 1, 2, 2, 1])[0]
    n_expl = 0
    n_fill = rng.randint(0, 1)
    if kind == "answer":
        parts = [rng.choice(["The answer is {a}.", "It is {a}.", "That would be {a}."]).format(a=answer)]
    elif kind == "explained":
        n_expl = rng.randint(1, 2)
        parts = [rng.choice(["The answer is {a}.", "It is {a}."]).format(a=answer)]
        parts += rng.sample(explanations, n_expl)
    elif kind == "detailed":
        n_expl = len(explanations)
        n_fill = rng.randint(0, 2)
        parts = ["The answer is {a}.".format(a=answer)] + explanations
    elif kind == "wrong":
        parts = [rng.choice(["The answer is {w}.", "I believe it is {w}."]).format(w=wrong)]
        if rng.random() < 0.5:
            parts.append(rng.choice(explanations))
            n_expl = 1
    elif kind == "evasive":
        parts = [rng.choice(EVASIVE)]
    else:
        n_fill = rng.randint(2, 3)
        parts = []
    fill = rng.sample(FILLER, n_fill)
    if kind == "rambling":
        parts = fill
    else:
        parts = parts + fill if rng.random() < 0.7 else fill + parts
    if len(" ".join(parts).split()) < 5:
        # HelpSteer responses are at least a sentence; keep ours >= 5 words.
        extra = rng.choice([f for f in FILLER if f not in parts])
        parts.append(extra)
        n_fill += 1
    text = " ".join(parts)
    words = len(text.split())

    helpful = {"answer": 3, "explained": 4, "detailed": 4, "wrong": 1, "evasive": 0,
               "rambling": 0}[kind]
    correct = {"answer": 4, "explained": 4, "detailed": 4, "wrong": 1, "evasive": 2,
               "rambling": 2}[kind]
    coherence = 1 if kind == "rambling" else (4 if n_fill < 1 else 3)
    complexity = min(4, 1 + n_expl) if kind != "rambling" else 1
    # Annotators disagree a little: occasional +-1 noise on a copy of the signal.
    if rng.random() < 0.15:
        helpful += rng.choice([-1, 1])
    if rng.random() < 0.1:
        correct += rng.choice([-1, 1])
    return {
        "response": text,
        "helpfulness": clamp(helpful),
        "correctness": clamp(correct),
        "coherence": clamp(coherence),
        "complexity": clamp(complexity),
        "verbosity": verbosity_of(words),
    }


def make_rows(rng, combos):
    rows = []
    for fact_i, style_i in combos:
        question, answer, wrong, explanations = FACTS[fact_i]
        prompt = STYLES[style_i].format(q=question)
        for _ in range(rng.randint(2, 4)):
            row = {"prompt": prompt}
            row.update(make_response(rng, answer, wrong, explanations))
            rows.append(row)
    return rows


def write_gz(path, rows):
    raw = io.BytesIO()
    # mtime=0 and no file name keep the bytes identical from run to run.
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        for row in rows:
            # HF's files are JSON lines with non-ASCII characters kept as is.
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    with open(path, "wb") as f:
        f.write(raw.getvalue())


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("data", "helpsteer-sample")
    rng = random.Random(SEED)
    combos = [(f, s) for f in range(len(FACTS)) for s in range(len(STYLES))]
    rng.shuffle(combos)
    train_combos = combos[:N_TRAIN_PROMPTS]
    valid_combos = combos[N_TRAIN_PROMPTS:N_TRAIN_PROMPTS + N_VALID_PROMPTS]
    os.makedirs(out_dir, exist_ok=True)
    for name, combo in (("train", train_combos), ("validation", valid_combos)):
        rows = make_rows(rng, combo)
        path = os.path.join(out_dir, name + ".jsonl.gz")
        write_gz(path, rows)
        print(f"{path}: {len(rows)} rows, {len(combo)} prompts")


if __name__ == "__main__":
    main()
