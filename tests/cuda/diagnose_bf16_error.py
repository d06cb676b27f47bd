#!/usr/bin/env python3
"""Where does a bf16 Llama's LoRA-gradient error come from?  (issue 6)

The CUDA backend keeps the residual and every accumulation in fp32 and rounds
to bf16 at a fixed set of places (the GEMM operands and a few stored
activations).  This script runs a plain PyTorch Llama of a given shape in fp32
on bf16-representable weights, and re-runs it with bf16 rounding switched on
at chosen places, forward ("f:") and backward ("b:", the gradient flowing into
that tensor), to measure how much each place costs in gradient cosine against
the pure fp32 run.  "all" mirrors the CUDA backend's roundings.  "h:" tags
round a forward place to fp16 instead (3 more mantissa bits): the variants at
the end ask which wider operands would bring the gradient within a cosine of
0.999 of fp32.

    python3 tests/cuda/diagnose_bf16_error.py [layers hidden ffn heads] [--fp16-only]

Defaults: the Llama-2-7B shape (32, 4096, 11008, 32), the batch of
gen_torch_reference.py (lengths 512, 450, 384, 300; labels on the last two
thirds; objective sum_s c_s logp_s), LoRA r 16, alpha 32 on q, v with
B ~ 0.01 N(0, 1).  Prints one JSON line per variant."""

import json
import math
import sys
import time

import torch

FWD = ["h", "qkv", "rope", "p", "attn", "gu", "act", "u", "head"]
BWD = ["qkv", "ds", "attn", "dx", "gu", "u"]
ALL = {"f:" + t for t in FWD} | {"b:" + t for t in BWD}


def fp16_at(places, on=ALL):
    """`on` with the forward roundings at `places` made fp16 ones."""
    return (on - {"f:" + t for t in places}) | {"h:" + t for t in places}


class Round(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fwd, bwd):
        ctx.bwd = bwd
        if fwd == "half":
            return x.half().float()
        return x.bfloat16().float() if fwd else x

    @staticmethod
    def backward(ctx, g):
        return (g.bfloat16().float() if ctx.bwd else g), None, None


def make_model(L, D, F, H, V, dev, seed=0):
    gen = torch.Generator(device=dev).manual_seed(seed)

    def w(*shape, std=0.02):
        return (torch.randn(*shape, generator=gen, device=dev) * std).bfloat16().float()

    layers = []
    for _ in range(L):
        lay = {n: w(o, i) for n, o, i in [("q", D, D), ("k", D, D), ("v", D, D), ("o", D, D),
                                          ("g", F, D), ("u", F, D), ("d", D, F)]}
        for t in ("q", "v"):
            bound = 1.0 / math.sqrt(D)  # PEFT's kaiming_uniform(a=sqrt(5)) on [r, in]
            lay["A" + t] = (torch.rand(16, D, generator=gen, device=dev) * 2 - 1) * bound
            lay["B" + t] = 0.01 * torch.randn(D, 16, generator=gen, device=dev)
        layers.append(lay)
    return {"embed": w(V, D), "lm": w(V, D), "layers": layers}


def forward(m, tokens, n_heads, on):
    def r(x, name):
        f = "half" if ("h:" + name) in on else ("f:" + name) in on
        b = ("b:" + name) in on
        return Round.apply(x, f, b) if (f or b) else x

    def rms(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    def lin(x, lay, n):
        y = x @ lay[n].t()
        if "A" + n in lay:
            u = r(x @ lay["A" + n].t(), "u")
            y = y + 2.0 * (u @ lay["B" + n].t())
        return y

    T = tokens.numel()
    D = m["embed"].shape[1]
    hd = D // n_heads
    pos = torch.arange(T, device=tokens.device, dtype=torch.float32)
    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, device=tokens.device).float() / hd))
    ang = pos[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x):  # [H, T, hd], rotate-half as in transformers
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    mask = torch.full((T, T), float("-inf"), device=tokens.device).triu(1)
    x = m["embed"][tokens]
    for lay in m["layers"]:
        h1 = r(rms(x), "h")
        q, k, v = (r(lin(h1, lay, n), "qkv").view(T, n_heads, hd).transpose(0, 1) for n in "qkv")
        q, k = r(rope(q), "rope"), r(rope(k), "rope")
        s = r(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, "ds")
        p = r(torch.softmax(s, -1), "p")
        o = r((p @ v).transpose(0, 1).reshape(T, D), "attn")
        x = x + r(lin(o, lay, "o"), "dx")
        h2 = r(rms(x), "h")
        a = r(torch.nn.functional.silu(r(lin(h2, lay, "g"), "gu")) * r(lin(h2, lay, "u"), "gu"),
              "act")
        x = x + r(lin(a, lay, "d"), "dx")
    return r(rms(x), "head") @ m["lm"].t()


def run(m, batch, n_heads, on):
    params = [lay[n] for lay in m["layers"] for n in ("Aq", "Bq", "Av", "Bv")]
    for p in params:
        p.grad = None
        p.requires_grad_(True)
    logps = []
    for tokens, lab, c in batch:
        logits = forward(m, tokens, n_heads, on)
        lp = torch.log_softmax(logits[:-1], -1).gather(1, tokens[1:, None]).squeeze(1)
        lp = (lp * lab[1:]).sum()
        (c * lp).backward()
        logps.append(lp.item())
    return torch.tensor(logps, dtype=torch.float64), [p.grad.clone() for p in params]


def compare(ref, got):
    (l0, g0), (l1, g1) = ref, got
    a = torch.cat([g.flatten() for g in g0]).double()
    b = torch.cat([g.flatten() for g in g1]).double()
    cos_all = (a @ b / (a.norm() * b.norm())).item()
    worst = min((x.double().flatten() @ y.double().flatten() /
                 (x.double().norm() * y.double().norm())).item() for x, y in zip(g0, g1))
    rel = ((l1 - l0).abs() / l0.abs()).max().item()
    return cos_all, worst, rel


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    L, D, F, H = [int(a) for a in args[:4]] if len(args) >= 4 else (32, 4096, 11008, 32)
    V = 32000
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t0 = time.time()
    m = make_model(L, D, F, H, V, dev)
    g = torch.Generator().manual_seed(1)
    batch = []
    for n in (512, 450, 384, 300):
        tok = torch.cat([torch.tensor([1]), torch.randint(3, V, (n - 1,), generator=g)])
        lab = torch.zeros(n)
        lab[n // 3:] = 1
        batch.append((tok.to(dev), lab.to(dev), torch.randn(1, generator=g).item()))
    ref = run(m, batch, H, set())
    print(json.dumps({"shape": [L, D, F, H], "device": torch.cuda.get_device_name() if dev ==
                      "cuda" else "cpu", "fp32_logps": ref[0].tolist(),
                      "seconds": round(time.time() - t0, 1)}), flush=True)
    variants = [("all", ALL), ("fwd only", {t for t in ALL if t[0] == "f"}),
                ("bwd only", {t for t in ALL if t[0] == "b"}),
                ("all but GEMM inputs (f:h f:attn f:act f:head)",
                 ALL - {"f:h", "f:attn", "f:act", "f:head"})]
    variants += [("all but " + t, ALL - {t}) for t in sorted(ALL)]
    variants += [("only " + t, {t}) for t in sorted(ALL)]
    variants += [("all, fp16 at h qkv rope", fp16_at(["h", "qkv", "rope"])),
                 ("all, fp16 at h qkv rope gu", fp16_at(["h", "qkv", "rope", "gu"])),
                 ("all, fp16 at every forward place", fp16_at(FWD))]
    if "--fp16-only" in sys.argv:
        variants = [("all", ALL)] + variants[-3:]
    for name, on in variants:
        cos_all, worst, rel = compare(ref, run(m, batch, H, on))
        print(json.dumps({"variant": name, "grad_cos_all": round(cos_all, 6),
                          "grad_cos_worst": round(worst, 6), "logps_rel_err": float(f"{rel:.3g}"),
                          "t": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
