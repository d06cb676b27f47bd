#!/usr/bin/env python3
"""Checks that transformers loads the tokenizers modpo exports and encodes
like modpo's C encoder.

build/tests/check_tokenizer (run by `make test`) exports tokenizers with
tokenizer_save_hf into build/tests/tokenizer/hf-*/ and writes, next to each,
c_ids.json: the C encoder's ids for every string of the fixture corpus.  This
script loads each directory with transformers.AutoTokenizer and compares:

    make build/tests/check_tokenizer && ./build/tests/check_tokenizer
    /work/venv/bin/python tests/check_tokenizer_hf.py

Exit status 0 when every exported directory agrees (hf-llama2 exists only
where ../shared/llama2-tokenizer does).
"""
import glob
import json
import os
import sys

import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check(dir_):
    tok = transformers.AutoTokenizer.from_pretrained(dir_)
    with open(os.path.join(dir_, "c_ids.json")) as f:
        cases = json.load(f)["cases"]
    bad = []
    for c in cases:
        # the C encoder never turns "<s>" in text into the BOS id; neither may HF
        ids = tok(c["text"], add_special_tokens=False, split_special_tokens=True).input_ids
        if ids != c["ids"]:
            bad.append(c["name"])
    with_bos = tok("Hello world").input_ids
    if with_bos[:1] != [tok.bos_token_id] or tok.bos_token_id is None:
        bad.append(f"BOS not added (got {with_bos[:3]}...)")
    if tok.decode(tok("Hello world").input_ids, skip_special_tokens=True) != "Hello world":
        bad.append("decode")
    name = os.path.relpath(dir_, ROOT)
    if bad:
        print(f"FAIL {name} ({type(tok).__name__}): differs on {', '.join(bad)}")
        return False
    print(f"ok   {name} ({type(tok).__name__}): {len(cases)} strings give the C ids")
    return True


def main():
    dirs = sorted(glob.glob(os.path.join(ROOT, "build", "tests", "tokenizer", "hf-*")))
    dirs = [d for d in dirs if os.path.exists(os.path.join(d, "c_ids.json"))]
    if not dirs:
        sys.exit("no exported tokenizers: run ./build/tests/check_tokenizer first")
    ok = all([check(d) for d in dirs])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
