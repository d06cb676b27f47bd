#!/usr/bin/env python3
"""Writes the fixtures that tests/check_sampling.c compares src/sampling.c
against: random float32 logits and random contexts pushed through the logits
processors that transformers' generate() itself builds
(GenerationMixin._get_logits_processor on a tiny Llama), so both the
processors' maths and generate's choice and order of processors are checked.

    /work/venv/bin/python tests/gen_sampling_fixtures.py [OUT_DIR]

OUT_DIR defaults to tests/fixtures/sampling; it gets processors.json:

    {"transformers": version, "cases": [
       {"name", "params": {do_sample, temperature, top_k, top_p,
                           repetition_penalty, no_repeat_ngram_size},
        "processors": [class names generate applied, in order],
        "context": [ids], "logits": [float32 values],
        "expected": [processed scores, null for -inf]}, ...]}

params are the effective ones (generate's defaults filled in, so top_k is 50
when a case leaves it unset).  Cases whose top-p cut falls within 1e-5 of a
cumulative probability are redrawn, so float32-vs-double summation cannot
flip a token.  Seeded: reruns write the same file (same torch build)."""

import json
import math
import os
import random
import sys

import numpy as np
import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TopPLogitsWarper

MAX_VOCAB = 96


def tiny_model():
    cfg = LlamaConfig(vocab_size=MAX_VOCAB, hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(cfg)


def generate_processors(model, user, context):
    """The processor list generate() builds for these user settings."""
    gc, _ = model._prepare_generation_config(GenerationConfig(**user))
    ids = torch.tensor([context], dtype=torch.long)
    procs = model._get_logits_processor(
        generation_config=gc, input_ids_seq_length=len(context), encoder_input_ids=ids,
        device="cpu", model_kwargs={"attention_mask": torch.ones_like(ids)})
    params = dict(do_sample=bool(gc.do_sample), temperature=float(gc.temperature),
                  top_k=int(gc.top_k or 0), top_p=float(gc.top_p),
                  repetition_penalty=float(gc.repetition_penalty),
                  no_repeat_ngram_size=int(gc.no_repeat_ngram_size))
    return procs, params


def top_p_is_clear(proc, scores, margin=1e-5):
    """False when a cumulative probability lies within margin of 1 - top_p
    (the last one does not count: the most likely token is always kept)."""
    finite = scores[torch.isfinite(scores)].double().sort().values
    if finite.numel() == 0:
        return True
    cum = torch.softmax(finite, dim=-1).cumsum(-1)[:-1]
    return bool(((cum - (1 - proc.top_p)).abs() > margin).all())


def apply(procs, context, logits):
    ids = torch.tensor([context], dtype=torch.long)
    scores = torch.tensor([logits], dtype=torch.float32)
    for proc in procs:
        if isinstance(proc, TopPLogitsWarper) and not top_p_is_clear(proc, scores[0]):
            return None
        scores = proc(ids, scores)
    return scores[0]


def random_context(rng, vocab):
    """Short contexts over a few ids, so n-grams repeat and ids recur."""
    n = rng.choice([1, 2, 3, 5, 8, 13, 21, 34])  # generate always has a BOS
    alphabet = rng.sample(range(vocab), k=min(vocab, rng.choice([2, 3, 5, 8])))
    return [rng.choice(alphabet) for _ in range(n)]


def random_user_settings(rng):
    user = {}
    user["do_sample"] = rng.random() < 0.7
    if rng.random() < 0.6:
        user["repetition_penalty"] = rng.choice([0.7, 1.15, 1.3, 2.0])
    if rng.random() < 0.6:
        user["no_repeat_ngram_size"] = rng.choice([1, 2, 3, 4])
    if user["do_sample"]:
        if rng.random() < 0.7:
            user["temperature"] = rng.choice([0.3, 0.7, 1.0, 1.6])
        if rng.random() < 0.5:
            user["top_k"] = rng.choice([0, 1, 5, 20])  # unset: generate's 50
        if rng.random() < 0.8:
            user["top_p"] = rng.choice([0.1, 0.5, 0.9, 0.95, 1.0])
    return user


def make_case(model, rng, name, user, vocab, context, logits):
    procs, params = generate_processors(model, user, context)
    out = apply(procs, context, logits)
    if out is None:
        return None
    expected = [None if math.isinf(v) and v < 0 else float(v) for v in out.tolist()]
    return dict(name=name, params=params, processors=[type(p).__name__ for p in procs],
                context=context, logits=[float(v) for v in logits], expected=expected)


def random_case(model, rng, nrng, index):
    while True:
        vocab = rng.choice([7, 16, 33, 64, MAX_VOCAB])
        context = random_context(rng, vocab)
        logits = (nrng.standard_normal(vocab) * rng.choice([0.5, 2.0, 4.0])).astype(np.float32)
        case = make_case(model, rng, f"random_{index:02d}", random_user_settings(rng),
                         vocab, context, logits.tolist())
        if case is not None:
            return case


def tie_cases(model, rng, nrng):
    """Logits on a coarse grid, so top-k's boundary and argmax see ties."""
    cases = []
    for i, user in enumerate([dict(do_sample=False), dict(do_sample=False, repetition_penalty=1.5),
                              dict(do_sample=True, top_k=5), dict(do_sample=True, top_k=3,
                                                                  temperature=0.5)]):
        vocab = 40
        logits = (nrng.integers(-4, 5, size=vocab) * 0.5).astype(np.float32).tolist()
        context = random_context(rng, vocab)
        cases.append(make_case(model, rng, f"ties_{i}", user, vocab, context, logits))
    return cases


def edge_cases(model, rng, nrng):
    """Hand-picked shapes: n-gram sizes at and around the context length,
    every token banned, a penalty on negative and positive scores."""
    cases = []
    logits = nrng.standard_normal(8).astype(np.float32).tolist()
    specs = [
        ("ngram_context_shorter", dict(no_repeat_ngram_size=3), [1, 2]),
        ("ngram_context_equal", dict(no_repeat_ngram_size=3), [1, 2, 1]),
        ("ngram_repeat", dict(no_repeat_ngram_size=2), [1, 2, 3, 1]),
        ("ngram_size_one", dict(no_repeat_ngram_size=1), [5, 0, 5, 7]),
        ("ngram_overlapping", dict(no_repeat_ngram_size=2), [4, 4, 4]),
        ("ngram_all_banned_greedy", dict(no_repeat_ngram_size=1), list(range(8))),
        ("penalty_signs", dict(repetition_penalty=1.3), [0, 1, 2, 3, 4, 5, 6, 7, 0, 0]),
        ("penalty_below_one", dict(repetition_penalty=0.5), [3, 3, 6]),
        ("top_p_keeps_one", dict(do_sample=True, top_p=0.0), [1]),
        ("everything", dict(do_sample=True, temperature=0.8, top_k=4, top_p=0.7,
                            repetition_penalty=1.2, no_repeat_ngram_size=2), [1, 3, 1, 6, 2, 1]),
    ]
    for name, user, context in specs:
        case = make_case(model, rng, name, user, 8, context, logits)
        assert case is not None, name
        cases.append(case)
    return cases


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "fixtures", "sampling")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    rng = random.Random(1234)
    nrng = np.random.default_rng(1234)
    model = tiny_model()
    cases = edge_cases(model, rng, nrng) + tie_cases(model, rng, nrng)
    cases += [random_case(model, rng, nrng, i) for i in range(40)]
    path = os.path.join(out_dir, "processors.json")
    with open(path, "w") as f:
        json.dump({"transformers": transformers.__version__, "cases": cases}, f,
                  separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
