#!/usr/bin/env python3
"""Writes the reference fixtures that tests/check_cpu_backend.c compares the
CPU backend against: tiny random Llamas built by transformers (fp32, eager
attention), each with a PEFT LoRA whose B is nonzero so the adapter matters.

    /work/venv/bin/python tests/gen_backend_fixtures.py [OUT_DIR]

OUT_DIR defaults to tests/fixtures/backend.  Every case gets a folder:

    <case>/model/      save_pretrained of the base model (config.json, model.safetensors, fp32)
    <case>/adapter/    PEFT save_pretrained of the adapter
    <case>/reference.safetensors
        tokens, lengths, label_mask  [S,T], [S], [S,T] I32: the right-padded batch
        coef           [S]        c_s of the objective L = sum_s c_s * logp_s
        logits         [S,T,V]    logits under the adapter; padding positions are 0
        logps_adapter  [S]        sum over t with label_mask[t] of log_softmax(logits[t-1])[tokens[t]]
        logps_base     [S]        the same with the adapter disabled (the reference model)
        grad.<PEFT tensor name>   dL/d(lora_A or lora_B weight), PEFT's names without ".default"

Seeds are fixed, so reruns write the same files (same torch build)."""

import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES = [
    # name, seed, model shape, LoRA targets, batch (lengths, prompt lengths)
    dict(name="mha_untied", seed=1,
         model=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                    num_key_value_heads=4, vocab_size=128, tie_word_embeddings=False,
                    rope_theta=10000.0, rms_norm_eps=1e-6),
         targets=["q_proj", "v_proj"],
         lengths=[10, 7, 9, 5], prompts=[4, 3, 4, 2]),
    dict(name="gqa", seed=2,
         model=dict(hidden_size=48, intermediate_size=64, num_attention_heads=6,
                    num_key_value_heads=2, vocab_size=160, tie_word_embeddings=False,
                    rope_theta=500000.0, rms_norm_eps=1e-5),
         targets=ALL_TARGETS,
         lengths=[8, 10, 6, 9], prompts=[3, 5, 2, 3]),
    dict(name="tied", seed=3,
         model=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=200, tie_word_embeddings=True,
                    rope_theta=10000.0, rms_norm_eps=1e-6),
         targets=["k_proj", "o_proj", "up_proj", "down_proj"],
         lengths=[9, 6, 10], prompts=[2, 4, 3]),
    # longer than the CPU backend's attention query block (64 rows), with one
    # key/value head shared by all query heads
    dict(name="long_mqa", seed=4,
         model=dict(hidden_size=32, intermediate_size=48, num_attention_heads=4,
                    num_key_value_heads=1, vocab_size=48, tie_word_embeddings=True,
                    rope_theta=10000.0, rms_norm_eps=1e-6),
         targets=["q_proj", "k_proj", "v_proj", "o_proj"],
         lengths=[136, 100], prompts=[40, 70]),
]


def build_model(spec):
    m = spec["model"]
    cfg = LlamaConfig(
        hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"],
        num_hidden_layers=2, num_attention_heads=m["num_attention_heads"],
        num_key_value_heads=m["num_key_value_heads"], vocab_size=m["vocab_size"],
        max_position_embeddings=128, rms_norm_eps=m["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": m["rope_theta"]},
        tie_word_embeddings=m["tie_word_embeddings"], bos_token_id=1, eos_token_id=2,
        attn_implementation="eager", torch_dtype="float32")
    model = LlamaForCausalLM(cfg).float().eval()
    # HF's 0.02-std init gives near-uniform softmaxes; weights of order 1/sqrt(fan_in)
    # and norm gains away from 1 make every term of the maths visible in the outputs.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    return model


def add_lora(model, targets):
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none")
    peft_model = get_peft_model(model, lcfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn_like(p))
    return peft_model


def sort_target_modules(path):
    """PEFT writes target_modules from a set, in hash order: sorted, reruns
    write the same file."""
    with open(path) as f:
        cfg = json.load(f)
    cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def make_batch(spec, vocab):
    lengths, prompts = spec["lengths"], spec["prompts"]
    S, T = len(lengths), max(lengths)
    tokens = torch.zeros(S, T, dtype=torch.long)
    mask = torch.zeros(S, T, dtype=torch.long)
    for s, (n, p) in enumerate(zip(lengths, prompts)):
        tokens[s, 0] = 1  # BOS
        tokens[s, 1:n] = torch.randint(3, vocab, (n - 1,))
        mask[s, p:n] = 1
    attn = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return tokens, mask, attn


def completion_logps(logits, tokens, mask):
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = torch.gather(logp, 2, tokens[:, 1:, None]).squeeze(2)
    return (tok * mask[:, 1:]).sum(1)


def write_case(spec, out_dir):
    torch.manual_seed(spec["seed"])
    model = build_model(spec)
    vocab = model.config.vocab_size
    case_dir = os.path.join(out_dir, spec["name"])
    model.save_pretrained(os.path.join(case_dir, "model"), safe_serialization=True)
    peft_model = add_lora(model, spec["targets"])
    peft_model.save_pretrained(os.path.join(case_dir, "adapter"))
    os.remove(os.path.join(case_dir, "adapter", "README.md"))  # PEFT's model card: noise here
    sort_target_modules(os.path.join(case_dir, "adapter", "adapter_config.json"))

    tokens, mask, attn = make_batch(spec, vocab)
    coef = torch.randn(len(spec["lengths"]))

    peft_model.zero_grad()
    logits = peft_model(input_ids=tokens, attention_mask=attn).logits
    logps = completion_logps(logits, tokens, mask)
    (coef * logps).sum().backward()
    with torch.no_grad(), peft_model.disable_adapter():
        logps_base = completion_logps(peft_model(input_ids=tokens, attention_mask=attn).logits,
                                      tokens, mask)

    ref = {
        "tokens": tokens.int(), "lengths": torch.tensor(spec["lengths"]).int(),
        "label_mask": mask.int(), "coef": coef,
        "logits": (logits.detach() * attn[:, :, None]).contiguous(),
        "logps_adapter": logps.detach(), "logps_base": logps_base,
    }
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            ref["grad." + name.replace(".default", "")] = p.grad.detach().clone()
    save_file({k: v.contiguous() for k, v in ref.items()},
              os.path.join(case_dir, "reference.safetensors"))
    return {"case": spec["name"], "logps_adapter": logps.tolist(),
            "logps_base": logps_base.tolist()}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "fixtures", "backend")
    torch.set_num_threads(1)  # one thread: the same reduction order on every rerun
    for spec in CASES:
        print(json.dumps(write_case(spec, out_dir)))


if __name__ == "__main__":
    main()
