#!/usr/bin/env python3
"""PyTorch baseline for the GPU benchmark of modpo's C/CUDA LoRA trainer.

Run side by side with the C benchmark on the same card (an H100); every
measurement prints one JSON line to stdout and appends it to --out (JSONL).

    python bench/torch_gpu_bench.py --shape llama2-7b --what all --out results.jsonl \
        [--device cuda|cpu] [--dtype bf16|fp32] [--seq-len 512] [--prompt-len 256]
        [--warmup 2] [--steps 5] [--pairs 1,2,4,8] [--precompute-batches 8,16,32]
        [--gen-prompt-len 128] [--gen-new 128] [--gen-batches 1,64] [--model-dir DIR]
    python bench/torch_gpu_bench.py modpo_tuned --shape tiny --device cpu   # one measurement
    python bench/torch_gpu_bench.py save_model --model-dir DIR               # for `startup`

Workload (the C benchmark mirrors it): a randomly initialised LlamaForCausalLM
(`llama2-7b`: Llama-2-7B's shape; `tiny`: for CPU tests) in bf16 with SDPA
attention.  Every sequence is seq_len random token ids; positions >= prompt_len
are labelled and logp(seq) = sum_t log_softmax(logits[t-1].float())[token t].
The LM head runs only on the rows that score a label (`logits_to_keep`), except
in `modpo_seed`, which keeps the seed trainer's full logits.  LoRA (peft) on
q_proj and v_proj, r 16, alpha 32, B initialised to 0.01*randn so that
gradients are not trivial.  MODPO loss with beta 0.1, w 0.5, margin_beta 1.0:
R(y) = (1/w)(beta(p - q) - (1 - w) m), loss = -logsigmoid(R_c - R_r), mean over
pairs.

Measurements (--what, comma separated, or `all`; or one positional subcommand):
  gemm         bf16 matmul n^3 (n 8192; tiny 512), best TFLOP/s of 10 reps;
               device-to-device copy of 1 GiB (tiny 16 MiB), best GB/s counting
               read + write bytes.
  modpo_tuned  a MODPO step per micro-batch of P pairs (2P sequences, chosen rows
               then rejected rows): reference logps (no_grad, adapter disabled),
               policy forward (no gradient checkpointing) + backward, margin
               rewards from a cached random tensor, clip_grad_norm_(1.0),
               AdamW(1e-4, wd 0.05); P grows until OOM.  Plus modpo_tuned_best.
  modpo_seed   the seed trainer's step, 1 pair: gradient checkpointing, full
               logits, a second never-trained LoRA adapter "margin"; reference
               forward, margin forwards on chosen and on rejected, policy
               forward + backward.
  precompute   the precompute cache's frozen passes on B sequences: reference
               (adapters disabled) and margin (margin adapter) logps, no_grad.
  generate     greedy model.generate of the base model (no LoRA), exactly N new
               tokens; new_tokens_per_s = batch*N / time, ms_per_step = time / N
               (the prompt's prefill included).
  save_model   save_pretrained of the random bf16 model to --model-dir.
  startup      a fresh Python process: import, from_pretrained, get_peft_model and
               one modpo_tuned step of 1 pair, timed from the script's first line.
               (Right after save_model the files are in the page cache.)
`all` runs gemm, modpo_tuned, modpo_seed, precompute, generate, then save_model
(to a temporary directory unless --model-dir holds a model) and startup.

FLOP convention (flops_per_token(); also printed in the JSON records):
  N_mm = parameters of all Linear layers including lm_head (not the embedding,
         not the norms, not LoRA).  Per token, with L layers, hidden h, seq_len S:
  fwd            = 2*N_mm + 2*L*S*h   (the matmuls + causal attention QK^T, AV)
  LoRA-only bwd  = 2*N_mm + 4*L*S*h   (input gradients only; frozen weights)
  a training step on a sequence = fwd + bwd; an extra no-grad forward = fwd.
  The LM head counts on every token even where only labelled rows are computed,
  and recomputation under gradient checkpointing is not counted: the numbers
  are useful work, the same for both implementations.
"""

import time

_T0 = time.perf_counter()  # first line: the startup measurement counts imports from here

import argparse
import datetime
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
import peft
from peft import LoraConfig, get_peft_model

_T_IMPORTED = time.perf_counter()

SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=512),
}
# Sizes of the gemm / copy measurement per shape (the tiny ones keep CPU tests fast).
GEMM_N = {"llama2-7b": 8192, "tiny": 512}
COPY_BYTES = {"llama2-7b": 1 << 30, "tiny": 16 << 20}

BETA, W, MARGIN_BETA = 0.1, 0.5, 1.0
LORA = dict(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
            bias="none")
LR, WEIGHT_DECAY, CLIP = 1e-4, 0.05, 1.0
LORA_B_STD = 0.01
FIRST_TOKEN = 3  # token ids from here up: skip pad/bos/eos (0, 1, 2)

FLOP_CONVENTION = ("N_mm = params of all Linear layers incl. lm_head (no embedding, norms, LoRA); "
                   "per token: fwd = 2*N_mm + 2*n_layers*seq_len*hidden; "
                   "LoRA-only bwd = 2*N_mm + 4*n_layers*seq_len*hidden; "
                   "train step on a sequence = fwd + bwd; extra no-grad forward = fwd")

ALL = ["gemm", "modpo_tuned", "modpo_seed", "precompute", "generate", "save_model", "startup"]

# --------------------------------------------------------------------------- helpers


def make_config(shape):
    return LlamaConfig(**SHAPES[shape], rms_norm_eps=1e-5, rope_theta=10000.0,
                       max_position_embeddings=4096, tie_word_embeddings=False,
                       bos_token_id=1, eos_token_id=2, attn_implementation="sdpa")


def n_mm_params(cfg):
    """Parameters of all Linear layers incl. lm_head (q, k, v, o, gate, up, down per layer)."""
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * i
    return L * per_layer + h * cfg.vocab_size


def flops_per_token(cfg, seq_len):
    """(fwd, LoRA-only bwd) FLOPs per token, per the module docstring's convention."""
    n_mm = n_mm_params(cfg)
    attn = cfg.num_hidden_layers * seq_len * cfg.hidden_size
    return 2 * n_mm + 2 * attn, 2 * n_mm + 4 * attn


def flop_fields(cfg, seq_len):
    fwd, bwd = flops_per_token(cfg, seq_len)
    return {"n_mm_params": n_mm_params(cfg), "flops_fwd_per_token": fwd,
            "flops_bwd_per_token": bwd, "flop_convention": FLOP_CONVENTION}


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev):
    if dev.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)


def free_memory(dev):
    """Between measurements (and after an OOM): drop cached blocks so the next one starts clean."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()


def is_oom(e):
    # torch.cuda.OutOfMemoryError on the GPU; CPU allocation failures are plain RuntimeErrors.
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def run_or_oom(fn):
    """(fn(), False), or (None, True) when it ran out of memory; other errors propagate.
    Returning from here drops the exception, so a failed step's tensors are unreferenced."""
    try:
        return fn(), False
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
    return None, True


def card_name(dev):
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def parse_ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


class Ctx:
    """Run-wide settings plus the record writer."""

    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        self.dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
        self.cfg = make_config(args.shape)
        self.gemm_tflops = None  # set by gemm, used for MFU

    def record(self, bench, **fields):
        a = self.args
        rec = {"bench": bench, "impl": "pytorch", "card": card_name(self.dev),
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "shape": a.shape, "seq_len": a.seq_len, "prompt_len": a.prompt_len,
               "device": self.dev.type, "dtype": a.dtype, "torch": torch.__version__,
               "transformers": transformers.__version__, "peft": peft.__version__,
               "peak_mem_gib": peak_gib(self.dev)}
        rec.update(fields)
        line = json.dumps(rec)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
        return rec


# --------------------------------------------------------------------------- model and data


def build_base_model(ctx):
    """Random HF init of the shape, directly in ctx.dtype on the device.

    Default dtype instead of a later .to(dtype): weights are born in bf16 (no fp32
    copy of 7B parameters) and the rotary inv_freq stays fp32, as from_pretrained does.
    """
    torch.manual_seed(ctx.args.seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(ctx.dtype)
    try:
        with torch.device(ctx.dev):
            model = LlamaForCausalLM(ctx.cfg)
    finally:
        torch.set_default_dtype(prev)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    n_linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert n_linear == n_mm_params(ctx.cfg), (n_linear, n_mm_params(ctx.cfg))
    return model


def randomize_lora_b(model, adapter, seed):
    """peft zero-inits B; small random B makes the policy differ from the reference
    and gives A non-zero gradients."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and f".{adapter}." in name:
                p.copy_(torch.randn(p.shape, generator=g) * LORA_B_STD)


def add_lora(model, ctx, adapters=("default",)):
    """peft LoRA on q_proj, v_proj; the first adapter is the trained policy one."""
    model = get_peft_model(model, LoraConfig(**LORA), adapter_name=adapters[0])
    for extra in adapters[1:]:
        model.add_adapter(extra, LoraConfig(**LORA))
    for k, name in enumerate(adapters):
        randomize_lora_b(model, name, ctx.args.seed + 1 + k)
    model.set_adapter(adapters[0])  # also leaves only this adapter requires_grad
    return model


def lora_params(model, adapter="default"):
    return [p for n, p in model.named_parameters()
            if "lora_" in n and f".{adapter}." in n and p.requires_grad]


def make_optimizer(params, dev):
    # fused AdamW on the GPU: one kernel for all LoRA tensors instead of many small ones.
    try:
        return torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, fused=dev.type == "cuda")
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)


def random_tokens(ctx, n_seq, seq_len, salt=0):
    """Seeded random token ids (CPU generator, so every device gets the same ids)."""
    g = torch.Generator().manual_seed(ctx.args.seed * 1000003 + 7919 * salt + n_seq)
    ids = torch.randint(FIRST_TOKEN, ctx.cfg.vocab_size, (n_seq, seq_len), generator=g)
    return ids.to(ctx.dev)


def seq_logps(model, ids, prompt_len, full_logits=False):
    """Sum over positions t >= prompt_len of log_softmax(logits[t-1].float())[ids[t]].

    Tuned: logits_to_keep = S - prompt_len + 1 computes the LM head only on rows
    prompt_len-1 .. S-1 (the last row predicts nothing and is dropped).  Seed
    (full_logits): the LM head on every row, then the same slice.  The log_softmax
    is in fp32 on the sliced rows only.  No attention mask: every sequence is full
    length, so SDPA runs plain causal attention.
    """
    S = ids.shape[1]
    keep = 0 if full_logits else S - prompt_len + 1  # 0 = every position
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
    logits = logits[:, prompt_len - 1 - S: -1] if full_logits else logits[:, :-1]
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, ids[:, prompt_len:, None]).squeeze(-1).sum(-1)


def modpo_loss(p, q, m, n_pairs):
    """p, q, m: [2P] policy logps, reference logps, margin rewards; chosen rows first."""
    r = (BETA * (p - q) - (1.0 - W) * m) / W
    return -F.logsigmoid(r[:n_pairs] - r[n_pairs:]).mean()


def tuned_step(model, opt, params, ids, margins, ctx):
    """One modpo_tuned step on 2P sequences; returns (loss, grad_norm) tensors (no sync)."""
    n_pairs = ids.shape[0] // 2
    with torch.no_grad(), model.disable_adapter():
        ref = seq_logps(model, ids, ctx.args.prompt_len)
    pol = seq_logps(model, ids, ctx.args.prompt_len)
    loss = modpo_loss(pol, ref, margins, n_pairs)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(params, CLIP)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach(), gnorm


def time_steps(step, ctx):
    """Warm-up steps untimed, then --steps steps each timed between synchronizes."""
    for _ in range(ctx.args.warmup):
        out = step()
    times = []
    for _ in range(ctx.args.steps):
        sync(ctx.dev)
        t0 = time.perf_counter()
        out = step()
        sync(ctx.dev)
        times.append(time.perf_counter() - t0)
    return times, out


def step_fields(times, n_pairs, n_seq, seq_len, flops):
    t = median(times)
    return {"step_ms": round(t * 1e3, 3), "step_ms_min": round(min(times) * 1e3, 3),
            "steps_timed": len(times), "pairs_per_s": round(n_pairs / t, 4),
            "tokens_per_s": round(n_seq * seq_len / t, 1),
            "tflops": round(flops / t / 1e12, 4)}


# --------------------------------------------------------------------------- measurements


def bench_gemm(ctx):
    """Card ceilings: bf16 GEMM TFLOP/s (for MFU) and device memory copy GB/s."""
    n, nbytes, reps = GEMM_N[ctx.args.shape], COPY_BYTES[ctx.args.shape], 10
    reset_peak(ctx.dev)
    torch.manual_seed(ctx.args.seed)
    a = torch.randn(n, n, device=ctx.dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=ctx.dev, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=ctx.dev, dtype=torch.bfloat16)
    best = float("inf")
    for k in range(reps + 2):  # two untimed warm-ups (cuBLAS heuristics, clocks)
        sync(ctx.dev)
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        sync(ctx.dev)
        if k >= 2:
            best = min(best, time.perf_counter() - t0)
    gemm_tflops = 2 * n**3 / best / 1e12
    del a, b, c
    src = torch.empty(nbytes, device=ctx.dev, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    best_copy = float("inf")
    for k in range(reps + 2):
        sync(ctx.dev)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(ctx.dev)
        if k >= 2:
            best_copy = min(best_copy, time.perf_counter() - t0)
    ctx.gemm_tflops = gemm_tflops
    ctx.record("gemm", gemm_n=n, gemm_reps=reps, gemm_tflops=round(gemm_tflops, 3),
               gemm_ms=round(best * 1e3, 4), copy_bytes=nbytes,
               copy_gbs=round(2 * nbytes / best_copy / 1e9, 2), copy_ms=round(best_copy * 1e3, 4))
    del src, dst
    free_memory(ctx.dev)


def bench_modpo_tuned(ctx):
    """MODPO steps at growing micro-batches, no gradient checkpointing, until OOM."""
    a, cfg = ctx.args, ctx.cfg
    model = add_lora(build_base_model(ctx), ctx)
    model.train()
    params = lora_params(model)
    opt = make_optimizer(params, ctx.dev)
    fwd, bwd = flops_per_token(cfg, a.seq_len)
    best = None

    def run(n_pairs):
        ids = random_tokens(ctx, 2 * n_pairs, a.seq_len)
        # Margin rewards come from the precompute cache in the tuned trainer: a fixed
        # tensor here.  Small, so that the loss starts near log 2.
        g = torch.Generator().manual_seed(a.seed + n_pairs)
        margins = (0.1 * torch.randn(2 * n_pairs, generator=g)).to(ctx.dev)
        times, (loss, gnorm) = time_steps(lambda: tuned_step(model, opt, params, ids, margins, ctx),
                                          ctx)
        n_tok = 2 * n_pairs * a.seq_len
        flops = n_tok * (fwd + bwd) + n_tok * fwd  # policy fwd+bwd, reference fwd
        return times, n_tok, flops, loss.item(), gnorm.item()

    for n_pairs in parse_ints(a.pairs):
        reset_peak(ctx.dev)
        result, oom = run_or_oom(lambda: run(n_pairs))
        if oom:
            opt.zero_grad(set_to_none=True)
            free_memory(ctx.dev)
            ctx.record("modpo_tuned", pairs=n_pairs, batch_seqs=2 * n_pairs, oom=True)
            break
        times, n_tok, flops, loss, gnorm = result
        f = step_fields(times, n_pairs, 2 * n_pairs, a.seq_len, flops)
        mfu = None if ctx.gemm_tflops is None else round(f["tflops"] / ctx.gemm_tflops, 4)
        rec = ctx.record("modpo_tuned", pairs=n_pairs, batch_seqs=2 * n_pairs, oom=False, **f,
                         mfu=mfu, loss_last=round(loss, 6), lora_grad_norm_last=gnorm,
                         **flop_fields(cfg, a.seq_len))
        if best is None or rec["pairs_per_s"] > best["pairs_per_s"]:
            best = rec
        free_memory(ctx.dev)
    if best is not None:
        keep = {k: v for k, v in best.items()
                if k not in ("bench", "impl", "card", "date", "shape", "seq_len", "prompt_len",
                             "device", "dtype", "torch", "transformers", "peft")}
        ctx.record("modpo_tuned_best", **keep)
    del model, opt, params
    free_memory(ctx.dev)


def bench_modpo_seed(ctx):
    """The seed trainer's step: 1 pair, gradient checkpointing, full logits, margin
    rewards from a second (never trained) LoRA adapter computed every step."""
    a, cfg = ctx.args, ctx.cfg
    base = build_base_model(ctx)
    base.gradient_checkpointing_enable()
    # With (reentrant) checkpointing and a frozen embedding, the checkpointed blocks'
    # inputs must require grad or the LoRA gradients are lost.
    base.enable_input_require_grads()
    model = add_lora(base, ctx, adapters=("default", "margin"))
    model.train()
    params = lora_params(model)
    opt = make_optimizer(params, ctx.dev)
    ids = random_tokens(ctx, 2, a.seq_len)
    P = a.prompt_len

    def step():
        with torch.no_grad():
            with model.disable_adapter():
                ref = seq_logps(model, ids, P, full_logits=True)
            model.set_adapter("margin")
            m_c = seq_logps(model, ids[:1], P, full_logits=True)
            m_r = seq_logps(model, ids[1:], P, full_logits=True)
            model.set_adapter("default")  # makes "default" trainable again, "margin" frozen
            margins = MARGIN_BETA * (torch.cat([m_c, m_r]) - ref)
        pol = seq_logps(model, ids, P, full_logits=True)
        loss = modpo_loss(pol, ref, margins, 1)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach(), gnorm

    reset_peak(ctx.dev)
    times, (loss, gnorm) = time_steps(step, ctx)
    fwd, bwd = flops_per_token(cfg, a.seq_len)
    n_tok = 2 * a.seq_len
    # useful work: policy fwd+bwd, reference fwd, margin fwd on both sequences
    flops = n_tok * (fwd + bwd) + 2 * n_tok * fwd
    f = step_fields(times, 1, 2, a.seq_len, flops)
    mfu = None if ctx.gemm_tflops is None else round(f["tflops"] / ctx.gemm_tflops, 4)
    ctx.record("modpo_seed", pairs=1, batch_seqs=2, **f, mfu=mfu, loss_last=round(loss.item(), 6),
               lora_grad_norm_last=gnorm.item(), **flop_fields(cfg, a.seq_len))
    del model, base, opt, params
    free_memory(ctx.dev)


def bench_precompute(ctx):
    """The precompute cache's frozen passes: reference and margin logps of B sequences."""
    a, cfg = ctx.args, ctx.cfg
    model = add_lora(build_base_model(ctx), ctx, adapters=("margin",))
    model.eval()
    fwd, _ = flops_per_token(cfg, a.seq_len)
    best = None

    def step(ids):
        with torch.no_grad():
            with model.disable_adapter():
                ref = seq_logps(model, ids, a.prompt_len)
            mar = seq_logps(model, ids, a.prompt_len)  # "margin" is the active adapter
        return ref, mar

    for B in parse_ints(a.precompute_batches):
        reset_peak(ctx.dev)
        def measure():
            ids = random_tokens(ctx, B, a.seq_len, salt=1)
            times, (ref, mar) = time_steps(lambda: step(ids), ctx)
            return times, (mar - ref).abs().mean().item()

        result, oom = run_or_oom(measure)
        if oom:
            free_memory(ctx.dev)
            ctx.record("precompute", batch_seqs=B, oom=True)
            break
        times, diff = result
        t = median(times)
        rec = ctx.record("precompute", batch_seqs=B, oom=False, step_ms=round(t * 1e3, 3),
                         step_ms_min=round(min(times) * 1e3, 3), steps_timed=len(times),
                         seqs_per_s=round(B / t, 3), tokens_per_s=round(B * a.seq_len / t, 1),
                         tflops=round(2 * B * a.seq_len * fwd / t / 1e12, 4),
                         mean_abs_margin_minus_ref=round(diff, 6), **flop_fields(cfg, a.seq_len))
        if best is None or rec["seqs_per_s"] > best["seqs_per_s"]:
            best = rec
        free_memory(ctx.dev)
    if best is not None:
        ctx.record("precompute_best", **{k: best[k] for k in (
            "batch_seqs", "step_ms", "seqs_per_s", "tokens_per_s", "tflops", "peak_mem_gib")})
    del model
    free_memory(ctx.dev)


def bench_generate(ctx):
    """Greedy decoding with the KV cache, exactly --gen-new new tokens per prompt."""
    a = ctx.args
    model = build_base_model(ctx)
    model.eval()
    N = a.gen_new

    def gen(ids, n):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=n, min_new_tokens=n, use_cache=True, pad_token_id=0)

    with torch.no_grad():
        for B in parse_ints(a.gen_batches):
            reset_peak(ctx.dev)
            ids = random_tokens(ctx, B, a.gen_prompt_len, salt=3)
            def timed():
                gen(ids, 4)  # untimed warm-up at this batch: kernels, allocator, cuBLAS
                sync(ctx.dev)
                t0 = time.perf_counter()
                out = gen(ids, N)
                sync(ctx.dev)
                assert out.shape == (B, a.gen_prompt_len + N), out.shape
                return time.perf_counter() - t0

            t, oom = run_or_oom(timed)
            if oom:
                free_memory(ctx.dev)
                ctx.record("generate", batch=B, gen_prompt_len=a.gen_prompt_len, new_tokens=N,
                           oom=True)
                break
            ctx.record("generate", batch=B, gen_prompt_len=a.gen_prompt_len, new_tokens=N,
                       oom=False, time_s=round(t, 4), new_tokens_per_s=round(B * N / t, 2),
                       ms_per_step=round(t / N * 1e3, 3))
            del ids
            free_memory(ctx.dev)
    del model
    free_memory(ctx.dev)


def has_model(d):
    return d is not None and os.path.isfile(os.path.join(d, "config.json"))


def bench_save_model(ctx):
    """Random model of the shape in ctx.dtype -> safetensors + config.json in --model-dir."""
    d = ctx.args.model_dir
    if not d:
        sys.exit("save_model needs --model-dir")
    model = build_base_model(ctx)
    t0 = time.perf_counter()
    model.save_pretrained(d, safe_serialization=True)  # writes config.json as well
    t = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    ctx.record("save_model", model_dir=d, save_s=round(t, 3), bytes=size)
    del model
    free_memory(ctx.dev)


def bench_startup(ctx):
    """Time to first finished step in a fresh interpreter (the child runs startup_child)."""
    a = ctx.args
    if not has_model(a.model_dir):
        sys.exit("startup needs --model-dir with a saved model (run save_model first)")
    cmd = [sys.executable, os.path.abspath(__file__), "--_startup-child",
           "--model-dir", a.model_dir,
           "--device", a.device, "--dtype", a.dtype, "--shape", a.shape, "--seq-len",
           str(a.seq_len), "--prompt-len", str(a.prompt_len), "--seed", str(a.seed)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"startup child failed ({res.returncode}): {res.stdout[-2000:]}")
    # The child's fields (its own peak_mem_gib included) override the parent's defaults.
    child = json.loads(res.stdout.strip().splitlines()[-1])
    ctx.record("startup", model_dir=a.model_dir, **child, process_wall_s=round(wall, 3))


def startup_child(ctx):
    """In the fresh process: imports are done (module level); load, wrap, one step."""
    a = ctx.args
    t_import = _T_IMPORTED - _T0
    kw = dict(attn_implementation="sdpa", device_map=ctx.dev.type)
    try:
        model = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=ctx.dtype, **kw)
    except TypeError:  # older transformers: torch_dtype
        model = LlamaForCausalLM.from_pretrained(a.model_dir, torch_dtype=ctx.dtype, **kw)
    if next(model.parameters()).dtype != ctx.dtype or next(model.parameters()).device.type \
            != ctx.dev.type:  # in case a version ignored a keyword
        model.to(device=ctx.dev, dtype=ctx.dtype)
    sync(ctx.dev)
    t_load = time.perf_counter()
    model = add_lora(model, ctx)
    model.train()
    params = lora_params(model)
    opt = make_optimizer(params, ctx.dev)
    ids = random_tokens(ctx, 2, a.seq_len)
    margins = torch.zeros(2, device=ctx.dev)
    loss, _ = tuned_step(model, opt, params, ids, margins, ctx)
    sync(ctx.dev)
    t_step = time.perf_counter()
    print(json.dumps({"import_s": round(t_import, 3), "load_s": round(t_load - _T_IMPORTED, 3),
                      "first_step_s": round(t_step - t_load, 3), "total_s": round(t_step - _T0, 3),
                      "first_loss": round(loss.item(), 6), "peak_mem_gib": peak_gib(ctx.dev)}),
          flush=True)


# --------------------------------------------------------------------------- main

BENCHES = {"gemm": bench_gemm, "modpo_tuned": bench_modpo_tuned, "modpo_seed": bench_modpo_seed,
           "precompute": bench_precompute, "generate": bench_generate,
           "save_model": bench_save_model, "startup": bench_startup}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("subcommand", nargs="?", choices=ALL + ["all"],
                    help="one measurement (same as --what NAME)")
    ap.add_argument("--what", default=None, help="comma-separated measurements or 'all'")
    ap.add_argument("--shape", default="llama2-7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"],
                    help="model weights (bf16 is the benchmark; fp32 only for slow CPU tests)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--pairs", default="1,2,4,8", help="modpo_tuned micro-batches (pairs)")
    ap.add_argument("--precompute-batches", default="8,16,32")
    ap.add_argument("--gen-prompt-len", type=int, default=128)
    ap.add_argument("--gen-new", type=int, default=128)
    ap.add_argument("--gen-batches", default="1,64")
    ap.add_argument("--model-dir", default=None, help="save_model target / startup source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="append the JSON records to this JSONL file")
    ap.add_argument("--_startup-child", dest="startup_child", action="store_true",
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not 1 <= a.prompt_len < a.seq_len:
        ap.error("need 1 <= prompt-len < seq-len")
    whats = a.what or a.subcommand or "all"
    wanted = ALL if whats == "all" else [w.strip() for w in whats.split(",") if w.strip()]
    bad = [w for w in wanted if w not in BENCHES]
    if bad:
        ap.error(f"unknown measurement(s) {bad}; choose from {ALL} or all")
    # Canonical order: gemm first (MFU needs it), save_model before startup.
    a.whats = [w for w in ALL if w in wanted]
    return a


def main(argv=None):
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    ctx = Ctx(a)
    if a.startup_child:
        startup_child(ctx)
        return
    # Quiet transformers' generation / checkpointing notices (stderr) between the records.
    transformers.logging.set_verbosity_error()
    temp_dir = None
    if "startup" in a.whats and not has_model(a.model_dir):
        if "save_model" not in a.whats:
            sys.exit("startup needs --model-dir with a saved model (or also run save_model)")
        if a.model_dir is None:  # save_model + startup: a throw-away copy of the model
            temp_dir = a.model_dir = tempfile.mkdtemp(prefix=f"torch_bench_{a.shape}_")
    try:
        for w in a.whats:
            if w == "save_model" and "startup" in a.whats and has_model(a.model_dir):
                print(f"save_model: reusing the model in {a.model_dir}", file=sys.stderr)
                continue  # e.g. `all` with an existing --model-dir
            BENCHES[w](ctx)
    finally:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
