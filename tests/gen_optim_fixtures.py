#!/usr/bin/env python3
"""Reference runs for src/adamw.c, src/grad_clip.c and src/lr_schedule.c.

Writes tests/fixtures/optim/optim.json with
- "runs": torch.optim.AdamW + torch.nn.utils.clip_grad_norm_ + a transformers
  schedule, 10 optimizer steps in Hugging Face Trainer's order (clip, step at
  the scheduler's current lr, then scheduler.step()) over three fp32 tensors
  (the C side sees them concatenated, like the flat LoRA vector).  Stored: the
  initial params, each step's gradients (before clipping), the lr used, the
  pre-clip norm, the params after the step, and the final moments.
- "schedules": transformers' get_{cosine,linear,constant}_schedule_with_warmup
  and get_constant_schedule, lr at steps 0..total, for several (total, warmup)
  settings; warmup given as steps or as a ratio resolved by
  TrainingArguments.get_warmup_steps.

Usage (from the repository root):
    /work/venv/bin/python tests/gen_optim_fixtures.py
"""
import json
import os
import tempfile

import torch
import transformers
from transformers import TrainingArguments
from transformers.optimization import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "optim", "optim.json")
SHAPES = [(8, 8), (8, 6), (21,)]
SCHEDULES = {
    "cosine": get_cosine_schedule_with_warmup,
    "linear": get_linear_schedule_with_warmup,
    "constant_with_warmup": lambda opt, w, t: get_constant_schedule_with_warmup(opt, w),
    "constant": lambda opt, w, t: get_constant_schedule(opt),
}


def flat(tensors):
    return [float(x) for t in tensors for x in t.detach().reshape(-1).tolist()]


def resolve_warmup(total, warmup_steps, warmup_ratio):
    if warmup_steps > 0:
        return warmup_steps
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, warmup_steps=warmup_ratio, report_to=[])
        return args.get_warmup_steps(total)


def adamw_run(seed, lr, wd, betas, eps, max_norm, schedule, total, warmup_steps, warmup_ratio, grad_scales):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).requires_grad_(True) for s in SHAPES]
    run = {
        "lr": lr, "weight_decay": wd, "beta1": betas[0], "beta2": betas[1], "eps": eps,
        "max_norm": max_norm, "schedule": schedule, "total_steps": total,
        "warmup_steps": warmup_steps, "warmup_ratio": warmup_ratio,
        "params0": flat(params), "steps": [],
    }
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    warmup = resolve_warmup(total, warmup_steps, warmup_ratio)
    sched = SCHEDULES[schedule](opt, warmup, total)
    for k in range(total):
        grads = [torch.randn(s, generator=gen) * grad_scales[k % len(grad_scales)] for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if max_norm > 0 else None
        lr_now = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad()
        run["steps"].append({
            "grads": flat(grads),
            "lr": lr_now,
            "norm": float(norm) if norm is not None else None,
            "params": flat(params),
        })
    state = [opt.state[p] for p in params]
    run["exp_avg"] = flat([s["exp_avg"] for s in state])
    run["exp_avg_sq"] = flat([s["exp_avg_sq"] for s in state])
    run["step"] = int(state[0]["step"])
    return run


def schedule_case(kind, base_lr, total, warmup_steps, warmup_ratio):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    warmup = resolve_warmup(total, warmup_steps, warmup_ratio)
    sched = SCHEDULES[kind](opt, warmup, total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return {
        "kind": kind, "base_lr": base_lr, "total_steps": total, "warmup_steps": warmup_steps,
        "warmup_ratio": warmup_ratio, "resolved_warmup": warmup, "lrs": lrs,
    }


def main():
    runs = [
        # The seed's setup in small: cosine, 20% warmup (2 steps), clip 1.0, wd 0.05.
        adamw_run(7, 1e-3, 0.05, (0.9, 0.999), 1e-8, 1.0, "cosine", 10, 0, 0.2,
                  [0.5, 0.02, 1.0, 0.01, 0.3]),
        # Other knobs: linear with 3 warmup steps, tighter clip, no decay, other betas/eps.
        adamw_run(11, 3e-3, 0.0, (0.8, 0.95), 1e-6, 0.5, "linear", 10, 3, 0.0,
                  [0.05, 0.001, 2.0]),
        # No clipping, constant lr with warmup ratio, large weight decay.
        adamw_run(13, 2e-2, 0.5, (0.9, 0.999), 1e-8, 0.0, "constant_with_warmup", 10, 0, 0.1,
                  [1e-3, 1.0]),
    ]
    schedules = []
    for kind in ("cosine", "linear", "constant_with_warmup", "constant"):
        for total, ws, ratio in ((10, 0, 0.2), (100, 0, 0.07), (1000, 0, 0.1), (50, 5, 0.0),
                                 (7, 0, 0.0), (5, 5, 0.0), (3, 10, 0.0), (1, 0, 0.5), (333, 0, 0.03)):
            schedules.append(schedule_case(kind, 1e-4, total, ws, ratio))
    data = {
        "generator": "tests/gen_optim_fixtures.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shapes": [list(s) for s in SHAPES],
        "runs": runs,
        "schedules": schedules,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f)
        f.write("\n")
    print(f"wrote {OUT}: {len(runs)} AdamW runs, {len(schedules)} schedules")


if __name__ == "__main__":
    main()
