#!/usr/bin/env python3
"""The training step of bench/cpu_step.c in PyTorch on the CPU: a random
LlamaForCausalLM (transformers, fp32, default attention) with a PEFT LoRA on
q_proj, v_proj (r 16, alpha 32), forward + backward of the summed completion
log-probs of a batch of full-length sequences whose last `completion` tokens
are labelled.  Prints one JSON line like cpu_step (best and median step).

    python bench/torch_cpu_step.py [--shape tiny|100m] [--batch 4] [--seq 256]
        [--completion 128] [--steps 3] [--warmup 1] [--threads 2] [--logits-to-keep]

By default the LM head runs on every position, as the seed's trainer does;
--logits-to-keep passes transformers' logits_to_keep so that only the
positions that score completion tokens get logits, as the C backend does.
"""

import argparse
import json
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

# The presets' shapes (src/model_presets.c); tiny with Llama-2's vocabulary.
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=12, tie_word_embeddings=True),
}


def completion_logps(logits, tokens, mask):
    """logits: the last k positions' (k = seq for the whole sequence)."""
    k = logits.shape[1]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = torch.gather(logp, 2, tokens[:, -k + 1:, None]).squeeze(2)
    return (tok * mask[:, -k + 1:]).sum(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--completion", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--logits-to-keep", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    cfg = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, **SHAPES[a.shape])
    model = LlamaForCausalLM(cfg).float()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"]))
    model.train()
    tokens = torch.randint(3, 32000, (a.batch, a.seq))
    mask = torch.zeros(a.batch, a.seq)
    mask[:, a.seq - a.completion:] = 1
    attn = torch.ones(a.batch, a.seq, dtype=torch.long)
    keep = a.completion + 1 if a.logits_to_keep else 0  # 0: every position

    steps, fwds = [], []
    for it in range(-a.warmup, a.steps):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=tokens, attention_mask=attn, logits_to_keep=keep).logits
        completion_logps(logits, tokens, mask).sum().backward()
        t1 = time.perf_counter()
        with torch.no_grad():
            logits = model(input_ids=tokens, attention_mask=attn, logits_to_keep=keep).logits
            completion_logps(logits, tokens, mask)
        t2 = time.perf_counter()
        if it >= 0:
            steps.append(t1 - t0)
            fwds.append(t2 - t1)
    step, fwd = min(steps), min(fwds)
    n = a.batch * a.seq
    print(json.dumps({"impl": f"torch-{torch.__version__}", "shape": a.shape, "batch": a.batch,
                      "seq": a.seq, "completion": a.completion, "steps": a.steps,
                      "threads": a.threads,
                      "logits_to_keep": keep, "step_s": round(step, 4),
                      "step_s_median": round(statistics.median(steps), 4),
                      "fwd_s": round(fwd, 4), "fwd_s_median": round(statistics.median(fwds), 4),
                      "step_tokens_per_s": round(n / step, 1),
                      "fwd_tokens_per_s": round(n / fwd, 1)}))


if __name__ == "__main__":
    main()
