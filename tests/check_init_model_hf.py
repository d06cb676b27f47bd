#!/usr/bin/env python3
"""Checks that model directories written by `modpo init-model` (or `modpo merge`)
load in transformers exactly: no missing, unexpected or mismatched weights, the
tokenizer loads with AutoTokenizer, and a forward pass gives finite logits.

    python tests/check_init_model_hf.py --modpo ./modpo [--presets tiny small-100m]
    python tests/check_init_model_hf.py DIR [DIR ...]

With --modpo, the presets are written into a temporary directory first
(--tokenizer is passed through to init-model when given).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def check_dir(path):
    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"{path}: {problems}"
    cfg = model.config
    assert cfg.model_type == "llama", cfg.model_type
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) <= cfg.vocab_size, (len(tok), cfg.vocab_size)
    ids = tok("Hello world, this is modpo.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model.eval()(ids).logits
    assert torch.isfinite(logits).all()
    # Random init as HF does it: std 0.02 for Linear/Embedding, norms 1.
    std = model.model.layers[0].self_attn.q_proj.weight.float().std().item()
    assert abs(std - 0.02) < 0.002, std
    assert torch.all(model.model.norm.weight == 1)
    n = sum(p.numel() for p in model.parameters())
    print(f"{path}: OK ({n:,} parameters, vocab {cfg.vocab_size}, tokenizer {len(tok)} "
          f"pieces, tied={cfg.tie_word_embeddings}, ids {ids[0, :6].tolist()}...)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--modpo", help="modpo binary: run init-model for --presets first")
    ap.add_argument("--presets", nargs="+", default=["tiny", "small-100m"])
    ap.add_argument("--tokenizer", help="passed to init-model --tokenizer")
    args = ap.parse_args()
    dirs = list(args.dirs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.modpo:
            for preset in args.presets:
                out = os.path.join(tmp, preset)
                cmd = [args.modpo, "init-model", "--preset", preset, "--out", out]
                if args.tokenizer:
                    cmd += ["--tokenizer", args.tokenizer]
                subprocess.run(cmd, check=True)
                dirs.append(out)
        if not dirs:
            ap.error("give model directories or --modpo")
        for d in dirs:
            check_dir(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
