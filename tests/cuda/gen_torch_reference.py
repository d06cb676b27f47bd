#!/usr/bin/env python3
"""PyTorch references for tests/cuda/check_cuda_torch.c on a random Llama of a
given shape (default Llama-2-7B's), made on the GPU by transformers:

    python3 tests/cuda/gen_torch_reference.py OUT_DIR [7b|wide2|small]

OUT_DIR/model/       save_pretrained of the base model (bf16 safetensors)
OUT_DIR/adapter/     PEFT LoRA r 16, alpha 32 on q_proj, v_proj (TARGETS=all: every
                     projection), B nonzero
OUT_DIR/grads_fp32/  the adapter format holding dL/d(lora weights) of torch fp32
OUT_DIR/grads_bf16/  the same from torch bf16 (the usual mixed setup: bf16 base,
                     fp32 LoRA weights as PEFT keeps them)
With F64=1 (a CPU check of the references themselves) the "fp32" results come
from float64 and the "bf16" ones from fp32.
OUT_DIR/reference.safetensors
    tokens, lengths, label_mask (I32), coef [S]: the objective sum_s coef_s logp_s
    logps_adapter_{fp32,bf16}, logps_base_{fp32,bf16} [S]
The fp32 pass runs the same bf16-representable weights upcast to fp32: the
ground truth that both bf16 implementations are measured against."""

import json
import os
import shutil
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
               lengths=[512, 450, 384, 300]),
    "wide2": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
                  num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                  lengths=[512, 450, 384, 300]),
    "smalllong": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, vocab_size=1000,
                      lengths=[512, 450, 384, 300]),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                  lengths=[64, 50, 40, 33]),
}


def log(msg, t0=[time.time()]):
    print(f"[{time.time() - t0[0]:7.1f} s] {msg}", flush=True)


def completion_logps(logits, tokens, mask):
    dt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logp = torch.log_softmax(logits[:, :-1].to(dt), dim=-1)
    tok = torch.gather(logp, 2, tokens[:, 1:, None]).squeeze(2)
    return (tok * mask[:, 1:]).sum(1)


def run(peft_model, tokens, attn, mask, coef):
    peft_model.zero_grad(set_to_none=True)
    logits = peft_model(input_ids=tokens, attention_mask=attn).logits
    logps = completion_logps(logits, tokens, mask)
    del logits
    (coef * logps).sum().backward()
    grads = {}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            grads[name.replace(".default", "")] = p.grad.detach().float().cpu().contiguous()
    with torch.no_grad(), peft_model.disable_adapter():
        logits = peft_model(input_ids=tokens, attention_mask=attn).logits
        base = completion_logps(logits, tokens, mask)
    if os.environ.get("DUMP_LOGITS"):
        global LAST_LOGITS
        with torch.no_grad():
            lg = peft_model(input_ids=tokens, attention_mask=attn).logits
        LAST_LOGITS = (lg.float() * attn[:, :, None]).cpu().contiguous()
    return logps.detach().cpu(), base.cpu(), grads


def restore_rope(model, theta):
    """model.to(bf16) also rounds the rotary inv_freq buffer to bf16, which moves
    every angle by up to position * 2^-9 (from_pretrained(torch_dtype=bf16) keeps
    it fp32).  Put back the fp32 frequencies, computed as transformers does."""
    for mod in model.modules():
        if hasattr(mod, "inv_freq"):
            dim = mod.inv_freq.numel() * 2
            idx = torch.arange(0, dim, 2, dtype=torch.int64).to(device=mod.inv_freq.device,
                                                              dtype=torch.float)
            inv = 1.0 / (theta ** (idx / dim))
            mod.inv_freq = inv
            if hasattr(mod, "original_inv_freq"):
                mod.original_inv_freq = inv


def save_grads(out, name, grads):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(out, "adapter", "adapter_config.json"), d)
    save_file(grads, os.path.join(d, "adapter_model.safetensors"))


def main():
    out = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "7b"
    if name in SHAPES:
        shape = SHAPES[name]
    else:  # h<hidden>-l<layers>-a<heads>-k<kv heads>-f<ffn>-v<vocab>-s<len,len,...>
        f = dict((p[0], p[1:]) for p in name.split("-"))
        shape = dict(hidden_size=int(f["h"]), num_hidden_layers=int(f["l"]),
                     num_attention_heads=int(f["a"]), num_key_value_heads=int(f["k"]),
                     intermediate_size=int(f["f"]), vocab_size=int(f["v"]),
                     lengths=[int(x) for x in f["s"].split(",")])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=shape["hidden_size"], intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"], vocab_size=shape["vocab_size"],
        max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        attn_implementation="sdpa")
    with torch.device(dev):
        model = LlamaForCausalLM(cfg)
    model = model.to(torch.bfloat16).eval()
    restore_rope(model, 10000.0)
    log(f"model made on {dev}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params")
    model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
    log("model saved")

    targets = ["q_proj", "v_proj"]
    if os.environ.get("TARGETS") == "all":
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lcfg = LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0, bias="none")
    peft_model = get_peft_model(model, lcfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.01 * torch.randn_like(p))
    peft_model.save_pretrained(os.path.join(out, "adapter"))

    lengths = shape["lengths"]
    S, T, V = len(lengths), max(lengths), cfg.vocab_size
    g = torch.Generator().manual_seed(1)
    tokens = torch.zeros(S, T, dtype=torch.long)
    mask = torch.zeros(S, T, dtype=torch.long)
    for s, n in enumerate(lengths):
        p = n // 3
        tokens[s, 0] = 1
        tokens[s, 1:n] = torch.randint(3, V, (n - 1,), generator=g)
        mask[s, p:n] = 1
    attn = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    coef = torch.randn(S, generator=g)
    tk, at, mk, cf = tokens.to(dev), attn.to(dev), mask.to(dev), coef.to(dev)

    if os.environ.get("SKIP_BF16"):  # a CPU torch run: fp32 only (bf16 results are copies)
        l16 = b16 = g16 = None
    elif os.environ.get("F64"):  # the "bf16" slots get torch fp32, the "fp32" ones fp64
        peft_model = peft_model.float()
        l16, b16, g16 = run(peft_model, tk, at, mk, cf)
        log("fp32 pass done")
    else:
        l16, b16, g16 = run(peft_model, tk, at, mk, cf)
        log("bf16 pass done")
    if os.environ.get("F64"):
        peft_model = peft_model.double()
    else:
        peft_model = peft_model.float()
    l32, b32, g32 = run(peft_model, tk, at, mk, cf)
    l32, b32 = l32.float(), b32.float()
    log("reference pass done")
    if l16 is None:
        l16, b16, g16 = l32.clone(), b32.clone(), g32
    save_grads(out, "grads_fp32", g32)
    save_grads(out, "grads_bf16", g16)
    ref = {"tokens": tokens.int(), "lengths": torch.tensor(lengths).int(),
           "label_mask": mask.int(), "coef": coef,
           "logps_adapter_fp32": l32, "logps_base_fp32": b32,
           "logps_adapter_bf16": l16, "logps_base_bf16": b16}
    if os.environ.get("DUMP_LOGITS"):  # [S, T, V] of the reference pass, under the adapter
        ref["logits"] = LAST_LOGITS
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out, "reference.safetensors"))
    print(json.dumps({"logps_adapter_fp32": l32.tolist(), "logps_adapter_bf16": l16.tolist(),
                      "logps_base_fp32": b32.tolist()}))
    log("written")


if __name__ == "__main__":
    main()
