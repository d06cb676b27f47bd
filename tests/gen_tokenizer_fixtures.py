#!/usr/bin/env python3
"""Tokenizer fixtures for tests/check_tokenizer.c, and the tiny tokenizer.

Run from anywhere with the project's Python environment
(sentencepiece, transformers, tokenizers):

    /work/venv/bin/python tests/gen_tokenizer_fixtures.py [--train-tiny]

What it does:
  1. The tiny tokenizer (ours).  With --train-tiny, or when
     tests/fixtures/tokenizer/tiny-tokenizer.model is missing, trains a
     sentencepiece BPE model (vocab 512, byte fallback, Llama 2's settings) on a
     generated English corpus.  Then converts that model to Hugging Face files
     in tests/tiny-tokenizer/ (tokenizer.json in Llama 2's legacy layout,
     tokenizer_config.json, special_tokens_map.json).
  2. Expected ids for a corpus of tricky strings, from sentencepiece's encode
     (no BOS), with sentencepiece's decode of those ids, for the tiny tokenizer
     and, when ../shared/llama2-tokenizer/tokenizer.model exists, for Llama 2.
     Only the strings and integer ids are written; nothing of the Llama 2
     model itself is.
  3. Cross-checks every expected id list against Hugging Face: transformers'
     AutoTokenizer on the converted tokenizer.json (BOS removed) must agree,
     or the script fails.  It also reports, without failing, how
     transformers' own LlamaTokenizer(legacy=True) differs (transformers 5
     rebuilds Llama's pipeline with a Metaspace pre-tokenizer, which changes
     ids of text that starts with a space).

  4. For the tiny model, also tokenizer.json as transformers 5 converts it
     (Metaspace pre-tokenizer, merges in vocabulary order) with the ids the
     tokenizers library gives for it, so the C reader of that layout is
     tested too.

Outputs: tests/fixtures/tokenizer/{tiny,llama2,tiny-hf5}.json and
tiny-hf5-tokenizer.json.
"""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile

import sentencepiece as spm
import tokenizers
import transformers
from sentencepiece import sentencepiece_model_pb2 as spm_pb2
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
TINY_DIR = os.path.join(ROOT, "tests", "tiny-tokenizer")
TINY_MODEL = os.path.join(FIXTURES, "tiny-tokenizer.model")
LLAMA_MODEL = os.path.join(ROOT, "..", "shared", "llama2-tokenizer", "tokenizer.model")
TEMPLATE = "\n\nHuman:\n{raw_prompt}\n\nAssistant:\n"

# ------------------------------------------------------------------ corpus

SUBJECTS = ["the model", "a student", "the assistant", "my friend", "the teacher", "our team",
            "the doctor", "this recipe", "the city", "a good answer", "the computer", "the report"]
VERBS = ["explains", "describes", "needs", "helps with", "changes", "improves", "shows",
         "writes about", "answers", "compares", "summarizes", "remembers"]
OBJECTS = ["the question", "a simple example", "the main idea", "two different options",
           "the history of the river", "a healthy breakfast", "the weather today",
           "how to learn quickly", "the best way to cook rice", "an important detail",
           "the price of the house", "every step of the process"]
TAILS = ["", " in detail", " very clearly", " for beginners", " with care", " again and again",
         " before the meeting", " after school", " in three sentences", " without any errors"]
QUESTIONS = ["What is {a}?", "How do I {b}?", "Why does {c} matter?", "Can you explain {a}?",
             "Write a short story about {c}.", "List three facts about {a}.",
             "Please summarize the following text: {c}"]


def sentence(rng):
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "!", "?"])


def tiny_corpus():
    """Generated English plus the prompt template, code and numbers."""
    rng = random.Random(1234)
    lines = []
    for _ in range(3000):
        lines.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 4))))
    for _ in range(600):
        q = rng.choice(QUESTIONS).format(a=rng.choice(OBJECTS), b=rng.choice(VERBS) + " " +
                                         rng.choice(OBJECTS), c=rng.choice(SUBJECTS))
        lines.append(f"Human: {q} Assistant: {sentence(rng)} {sentence(rng)}")
    for _ in range(300):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        lines.append(f"The answer is {a} + {b} = {a + b}, about {a / (b + 1):.2f} per cent in 2024.")
        lines.append(f"def add_{a}(x, y):    return x + y  # adds {b} (see [1]) {{'k': \"v\"}}")
    lines.append("ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789")
    lines.append("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    return lines


def train_tiny(path):
    """sentencepiece BPE with Llama 2's trainer settings, scaled down."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "tiny")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(tiny_corpus()), model_prefix=prefix, model_type="bpe",
            vocab_size=512, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity", add_dummy_prefix=True,
            remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
            max_sentencepiece_length=16, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
            minloglevel=2)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(prefix + ".model", path)


# -------------------------------------------------- sentencepiece -> HF json

def read_proto(path):
    m = spm_pb2.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    return m


def ordered_merges(proto):
    """Every split of a normal piece into two normal pieces is a merge, ranked
    as transformers' converter for Llama ranks them: higher score of the merged
    piece first, then longer left part, then longer right part, then vocabulary
    order.  Longer-left-first makes equal scores (Llama's whitespace runs) merge
    left to right, as sentencepiece breaks ties."""
    normal = {p.piece: i for i, p in enumerate(proto.pieces) if p.type in (1, 5)}
    rows = []
    for piece, pid in normal.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                rows.append((-proto.pieces[pid].score, -len(left), -len(right), pid,
                             normal[left], normal[right], left, right))
    rows.sort(key=lambda r: r[:6])
    return [(r[6], r[7]) for r in rows]


def convert_to_hf(model_path, out_dir):
    """Writes tokenizer.json (+ config files) in Llama 2's legacy layout:
    normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, BPE with
    byte fallback, BOS added by the post-processor."""
    proto = read_proto(model_path)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    unk = proto.trainer_spec.unk_piece or "<unk>"
    bos, eos = proto.trainer_spec.bos_piece or "<s>", proto.trainer_spec.eos_piece or "</s>"
    tok = Tokenizer(BPE(vocab=vocab, merges=ordered_merges(proto), unk_token=unk, fuse_unk=True,
                        byte_fallback=proto.trainer_spec.byte_fallback, dropout=None))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])])
    specials = [p.piece for p in proto.pieces if p.type in (2, 3)]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))

    def added(s):
        return {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True}

    config = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {str(vocab[s]): added(s) for s in specials},
        "bos_token": bos, "clean_up_tokenization_spaces": False, "eos_token": eos,
        "legacy": True, "pad_token": None,
        # transformers 5's LlamaTokenizer(Fast) would replace the normalizer
        # above by a Metaspace pre-tokenizer; PreTrainedTokenizerFast keeps it.
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": unk,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    stm = {k: {kk: vv for kk, vv in added(v).items() if kk != "special"}
           for k, v in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk))}
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump(stm, f, indent=2)
        f.write("\n")


# ------------------------------------------------------------ test strings

def long_text():
    rng = random.Random(99)
    parts = []
    while sum(len(p) for p in parts) < 10000:
        r = rng.random()
        if r < 0.75:
            parts.append(sentence(rng) + " ")
        elif r < 0.85:
            parts.append("\n\n")
        elif r < 0.9:
            parts.append(rng.choice(["naïve café ", "日本語 ", "🦙 ", "x = [1, 2, 3]\n", "\t", "   "]))
        else:
            parts.append(f"{rng.randint(0, 10**6)} ")
    return "".join(parts)


def test_strings():
    code = ("#include <stdio.h>\n\nint main(void)\n{\n\tfor (int i = 0; i < 10; i++) {\n"
            "\t\tprintf(\"%d\\n\", i);  // print\n\t}\n\treturn 0;\n}\n")
    py = "def f(x):\n    if x <= 0 and x != -1:\n        return {'a': [1, 2.5e-3]}\n    return None\n"
    return [
        ("empty", ""),
        ("hello", "Hello world"),
        ("readme_prompt", TEMPLATE.format(raw_prompt="What is 2+2?")),
        ("leading_spaces", "  leading spaces"),
        ("one_space", " "),
        ("space_then_word", " x"),
        ("space_then_hello", " Hello  world"),
        ("two_spaces", "  "),
        ("trailing_spaces", "trailing spaces   "),
        ("single_char", "a"),
        ("space_run_40", "a" + " " * 40 + "b"),
        ("space_run_17", " " * 17),
        ("space_run_33_tail", "x" + " " * 33),
        ("tabs", "\tone\t\ttwo\t\t\tthree"),
        ("newlines", "\n\n\nline\n\n\n\nbreaks\n"),
        ("mixed_whitespace", "   \n   \t  \r\n \u00a0 \u3000 end"),
        ("crlf", "Windows\r\nline\r\nendings\r\n"),
        ("template_multiline", TEMPLATE.format(
            raw_prompt="Summarize this:\n\n  - first point\n  - second point\n\nThanks!")),
        ("prompt_response", TEMPLATE.format(raw_prompt="Name a fruit.") + "An apple is a fruit."),
        ("template_empty_prompt", TEMPLATE.format(raw_prompt="")),
        ("latin_accents", "naïve café résumé über straße façade"),
        ("greek_cyrillic", "Ωμέγα αβγ — Привет, мир!"),
        ("cjk", "日本語のテキストと中文测试，标点符号。"),
        ("korean", "한국어 텍스트입니다"),
        ("arabic_hebrew", "مرحبا بالعالم שלום עולם"),
        ("devanagari_thai", "नमस्ते दुनिया สวัสดีครับ"),
        ("emoji", "I love 🦙 and 🔥!! 👍🏽"),
        ("emoji_zwj_flags", "family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵"),
        ("rare_cjk", "𠜎𠜱𠝹𠱓 龘 𪚥"),
        ("control_chars", "a\x01b\x02c\x7fd\x1be"),
        ("nul_char", "a\x00b"),
        ("zero_width", "zero\u200bwidth\ufeffbom"),
        ("replacement_char", "bad \ufffd byte"),
        ("metaspace_literal", "▁▁x ▁ y▁"),
        ("special_text", "<s>not a bos</s> <unk> <0x41>"),
        ("code_c", code),
        ("code_python", py),
        ("json", '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}'),
        ("url_email", "https://example.com/path?q=1&r=2#frag user@example.org"),
        ("numbers", "1234567890 3.14159 -42 1e10 0x1F 1,000,000"),
        ("math", "x² + y² = z², ∑ᵢ aᵢ ≤ ∞, √2 ≈ 1.414"),
        ("punctuation", "Wait... what?! (Really) [yes] {no} \"quoted\" 'single' `back`"),
        ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis " * 3),
        ("repeated_chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!!!!!!!!!!!!!!!!!!!"),
        ("long_text", long_text()),
    ]


# --------------------------------------------------------------- expected

def sp_cases(model_path):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    cases = []
    for name, text in test_strings():
        ids = sp.encode(text)
        cases.append({"name": name, "text": text, "ids": ids, "decoded": sp.decode(ids)})
    return cases


def hf_ids(tok, text):
    out = tok(text, add_special_tokens=False, split_special_tokens=True).input_ids
    return out


def cross_check(label, cases, hf_dir, model_path):
    """HF on our converted tokenizer.json must match sentencepiece exactly."""
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    bad = [c["name"] for c in cases if hf_ids(tok, c["text"]) != c["ids"]]
    with_bos = tok("Hello world").input_ids
    if with_bos[0] != tok.bos_token_id:
        bad.append("BOS not added by the post-processor")
    if bad:
        sys.exit(f"{label}: Hugging Face ({type(tok).__name__}) disagrees with sentencepiece on: "
                 + ", ".join(bad))
    print(f"{label}: {len(cases)} cases, sentencepiece == {type(tok).__name__} on tokenizer.json")
    # Informational: transformers' own conversion of tokenizer.model.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(model_path, os.path.join(tmp, "tokenizer.model"))
        for what, load in (("LlamaTokenizer(legacy=True)",
                            lambda: transformers.LlamaTokenizer.from_pretrained(tmp, legacy=True)),
                           ("AutoTokenizer(tokenizer.model)",
                            lambda: transformers.AutoTokenizer.from_pretrained(tmp))):
            try:
                t = load()
            except Exception as e:  # noqa: BLE001 - report, never fail on these
                print(f"  {what}: could not load ({e})")
                continue
            diff = [c["name"] for c in cases if hf_ids(t, c["text"]) != c["ids"]]
            print(f"  note: transformers {transformers.__version__} {what}: "
                  f"{len(cases) - len(diff)}/{len(cases)} agree" +
                  (f"; differs on {', '.join(diff)}" if diff else ""))


def hf5_variant(model_path, out_json):
    """tokenizer.json as transformers 5 writes it for a Llama sentencepiece
    model (Metaspace pre-tokenizer, merges in vocabulary order): the layout a
    model directory re-saved with transformers 5 has.  Its ids differ from
    sentencepiece's for some whitespace; modpo must give Hugging Face's."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        shutil.copyfile(model_path, os.path.join(a, "tokenizer.model"))
        transformers.LlamaTokenizer.from_pretrained(a, legacy=True).save_pretrained(b)
        shutil.copyfile(os.path.join(b, "tokenizer.json"), out_json)


def hf_cases(tokenizer_json, model_path):
    """Expected ids from the tokenizers library itself; strings that spell a
    special token are left out (Hugging Face splits those off as specials)."""
    tok = Tokenizer.from_file(tokenizer_json)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    cases = []
    for name, text in test_strings():
        if any(s in text for s in ("<s>", "</s>", "<unk>")):
            continue
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"name": name, "text": text, "ids": ids, "decoded": sp.decode(ids)})
    return cases


def write_fixture(path, tokenizer, source, cases):
    head = {
        "tokenizer": tokenizer,
        "source": source,
        "generated_by": "tests/gen_tokenizer_fixtures.py",
        "expected_from": f"sentencepiece {spm.__version__} encode (no BOS) and decode",
        "cross_checked_with": f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}",
    }
    with open(path, "w") as f:
        f.write("{\n")
        for k, v in head.items():
            f.write(f"  {json.dumps(k)}: {json.dumps(v)},\n")
        f.write('  "cases": [\n')
        f.write(",\n".join("    " + json.dumps(c, ensure_ascii=True) for c in cases))
        f.write("\n  ]\n}\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-tiny", action="store_true", help="retrain the tiny sentencepiece model")
    args = ap.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)
    if args.train_tiny or not os.path.exists(TINY_MODEL):
        train_tiny(TINY_MODEL)
        print(f"trained {os.path.relpath(TINY_MODEL, ROOT)}")
    convert_to_hf(TINY_MODEL, TINY_DIR)
    print(f"wrote {os.path.relpath(TINY_DIR, ROOT)}/")

    cases = sp_cases(TINY_MODEL)
    cross_check("tiny", cases, TINY_DIR, TINY_MODEL)
    write_fixture(os.path.join(FIXTURES, "tiny.json"), "tiny", "tests/tiny-tokenizer", cases)
    hf5_json = os.path.join(FIXTURES, "tiny-hf5-tokenizer.json")
    hf5_variant(TINY_MODEL, hf5_json)
    write_fixture(os.path.join(FIXTURES, "tiny-hf5.json"), "tiny, transformers 5 layout",
                  os.path.relpath(hf5_json, ROOT), hf_cases(hf5_json, TINY_MODEL))

    if not os.path.exists(LLAMA_MODEL):
        print("skipping Llama 2: ../shared/llama2-tokenizer absent")
        return
    cases = sp_cases(LLAMA_MODEL)
    with tempfile.TemporaryDirectory() as tmp:  # the converted model stays out of the repo
        convert_to_hf(LLAMA_MODEL, tmp)
        cross_check("llama2", cases, tmp, LLAMA_MODEL)
    write_fixture(os.path.join(FIXTURES, "llama2.json"), "llama2",
                  "../shared/llama2-tokenizer/tokenizer.model", cases)


if __name__ == "__main__":
    main()
