#!/usr/bin/env python3
"""Reference values for src/losses.c, computed with torch autograd.

Writes tests/fixtures/losses/losses.json: SFT, DPO and MODPO cases (random
batches, plus extreme ones with |logit| up to 100 for numerical stability),
each with its inputs and, in float64 and in float32, the loss, the metrics
under the seed's log keys and dL/dlogp for every policy input.

The maths is written the way the seed's trainers write it (ZHZisZZ/modpo's
DPOTrainer.dpo_loss / MODPOTrainer.modpo_loss and get_batch_metrics; HF's
LlamaForCausalLM loss for SFT), so the fixture pins our C code to them.
Inputs are fp32-representable (that is what the backend hands the losses), and
JSON keeps every double exactly.

Usage (from the repository root):
    /work/venv/bin/python tests/gen_loss_fixtures.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "losses", "losses.json")


def floats(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


# ---------------------------------------------------------------- SFT

def sft_case(gen, n_seq, max_len, vocab, grad_scale, dtype):
    """HF's causal-LM loss on a right-padded batch with prompt labels masked
    (-100), and the per-sequence completion logps our backend would return."""
    logits = (torch.randn(n_seq, max_len, vocab, generator=gen, dtype=torch.float64) * 3).to(dtype)
    labels = torch.randint(0, vocab, (n_seq, max_len), generator=gen)
    for s in range(n_seq):
        length = int(torch.randint(3, max_len + 1, (1,), generator=gen))
        prompt = int(torch.randint(1, length - 1, (1,), generator=gen))
        labels[s, :prompt] = -100
        labels[s, length:] = -100
    logits.requires_grad_(True)
    shift_logits, shift_labels = logits[:, :-1, :], labels[:, 1:]
    hf_loss = F.cross_entropy(shift_logits.reshape(-1, vocab), shift_labels.reshape(-1), ignore_index=-100)
    (hf_loss * grad_scale).backward()
    mask = shift_labels != -100
    logp_tok = torch.log_softmax(shift_logits.detach(), -1).gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logps = (logp_tok * mask).sum(-1).detach().requires_grad_(True)
    n_tokens = mask.sum(-1)
    # Our objective as a function of the per-sequence logps.
    loss = -logps.sum() / n_tokens.sum()
    (loss * grad_scale).backward()
    # Chain rule check: dL/dlogits from HF's loss equals sum_s dL/dlogp_s * dlogp_s/dlogits.
    lg = logits.detach().clone().requires_grad_(True)
    lp = torch.log_softmax(lg[:, :-1, :], -1).gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ((lp * mask).sum(-1) * logps.grad).sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(lg.grad, logits.grad, atol=tol, rtol=0), "SFT chain rule"
    assert abs(float(hf_loss.detach()) - float(loss.detach())) <= tol * abs(float(loss.detach())) * 10, "SFT loss vs HF"
    return {
        "logps": floats(logps),
        "n_tokens": [int(x) for x in n_tokens.tolist()],
        "loss": float(loss.detach()),
        "hf_loss": float(hf_loss.detach()),
        "dlogps": floats(logps.grad),
    }


def sft_cases(gen):
    cases = []
    for n_seq, max_len, vocab, scale in [(1, 12, 17, 1.0 / 8), (3, 20, 31, 1.0), (5, 9, 11, 0.25)]:
        state = gen.get_state()
        case = {"grad_scale": scale}
        for name, dtype in (("f64", torch.float64), ("f32", torch.float32)):
            gen.set_state(state)
            case[name] = sft_case(gen, n_seq, max_len, vocab, scale, dtype)
        # Each block carries the logps it was computed from (the float64 ones
        # reach the C side rounded to fp32, as everything from the backend).
        case["n_tokens"] = case["f32"]["n_tokens"]
        cases.append(case)
    return cases


# ---------------------------------------------------------------- DPO / MODPO

def pref_loss(logits, loss_type):
    if loss_type == "sigmoid":
        return -F.logsigmoid(logits)
    return torch.relu(1 - logits)


def pref_outputs(inp, beta, loss_type, grad_scale, dtype, w=None):
    """Loss, metrics and gradients as the seed computes them."""
    pc = torch.tensor(inp["policy_chosen"], dtype=dtype, requires_grad=True)
    pr = torch.tensor(inp["policy_rejected"], dtype=dtype, requires_grad=True)
    rc = torch.tensor(inp["ref_chosen"], dtype=dtype)
    rr = torch.tensor(inp["ref_rejected"], dtype=dtype)
    metrics = {}
    if w is None:
        chosen_rewards = beta * (pc - rc)
        rejected_rewards = beta * (pr - rr)
    else:
        wv = torch.tensor([w, 1 - w], dtype=dtype)
        mc = torch.tensor(inp["margin_chosen"], dtype=dtype).unsqueeze(-1)
        mr = torch.tensor(inp["margin_rejected"], dtype=dtype).unsqueeze(-1)
        chosen_rewards = (1 / wv[0]) * (beta * (pc - rc) - mc @ wv[1:])
        rejected_rewards = (1 / wv[0]) * (beta * (pr - rr) - mr @ wv[1:])
        margins = torch.cat([mc, mr], 0)
        metrics["rewards/margins_raw_mean"] = margins.mean()
        metrics["rewards/margins_raw_std"] = margins.std()
        metrics["margin_rewards/chosen"] = mc.mean()
        metrics["margin_rewards/rejected"] = mr.mean()
        metrics["implicit_rewards/chosen"] = (beta * (pc - rc)).mean()
        metrics["implicit_rewards/rejected"] = (beta * (pr - rr)).mean()
        metrics["implicit_rewards/margins"] = (beta * (pc - rc)).mean() - (beta * (pr - rr)).mean()
    logits = chosen_rewards - rejected_rewards
    losses = pref_loss(logits, loss_type)
    loss = losses.mean()
    (loss * grad_scale).backward()
    cr, rj = chosen_rewards.detach(), rejected_rewards.detach()
    metrics["rewards/chosen"] = cr.mean()
    metrics["rewards/rejected"] = rj.mean()
    metrics["rewards/margins"] = (cr - rj).mean()
    metrics["accuracy"] = (cr > rj).to(dtype).mean()
    metrics["logps/chosen"] = pc.detach().mean()
    metrics["logps/rejected"] = pr.detach().mean()
    metrics["logps/margins"] = (pc - pr).detach().mean()
    return {
        "loss": float(loss.detach()),
        "metrics": {k: float(v.detach()) for k, v in metrics.items()},
        "d_chosen": floats(pc.grad),
        "d_rejected": floats(pr.grad),
    }


def f32(t):
    return [float(x) for x in t.to(torch.float32).tolist()]


def pref_inputs(gen, n, spread, scale_z=None, target_z=None, w=None):
    """Random fp32 logps; `spread` sets |pi - ref|.  With target_z, the
    reference is placed so that the pair logits are close to +-target_z."""
    pc = -torch.rand(n, generator=gen, dtype=torch.float64) * 590 - 10
    pr = -torch.rand(n, generator=gen, dtype=torch.float64) * 590 - 10
    dc = torch.randn(n, generator=gen, dtype=torch.float64) * spread
    dr = torch.randn(n, generator=gen, dtype=torch.float64) * spread
    mc = torch.randn(n, generator=gen, dtype=torch.float64) * 2
    mr = torch.randn(n, generator=gen, dtype=torch.float64) * 2
    if target_z is not None:
        # z = scale_z*(dc - dr) - margin part; put half the target on each side.
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
        z = sign * target_z
        margin = 0.0 if w is None else (1 - w) / w * (mc - mr)
        dc = (z + margin) / (2 * scale_z)
        dr = -dc
    inp = {
        "policy_chosen": f32(pc), "policy_rejected": f32(pr),
        "ref_chosen": f32(pc - dc), "ref_rejected": f32(pr - dr),
    }
    if w is not None:
        inp["margin_chosen"] = f32(mc)
        inp["margin_rejected"] = f32(mr)
    return inp


def pref_case(inp, beta, loss_type, grad_scale, w=None):
    case = {"beta": beta, "loss_type": loss_type, "grad_scale": grad_scale, **inp}
    if w is not None:
        case["w"] = w
    case["f64"] = pref_outputs(inp, beta, loss_type, grad_scale, torch.float64, w)
    case["f32"] = pref_outputs(inp, beta, loss_type, grad_scale, torch.float32, w)
    return case


def pref_cases(gen, modpo):
    cases = []
    ws = [0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0] if modpo else [None]
    i = 0
    for w in ws:
        for loss_type in ("sigmoid", "hinge"):
            for n, spread in ((1, 5.0), (4, 0.5), (7, 50.0)):
                beta = (0.1, 0.5)[i % 2]
                scale = (1.0, 0.125)[(i // 2) % 2]
                cases.append(pref_case(pref_inputs(gen, n, spread, w=w), beta, loss_type, scale, w))
                i += 1
    # Extreme logits: |z| ~ 100, 50, 30, with both signs, per loss type.
    for loss_type in ("sigmoid", "hinge"):
        for target in (100.0, 50.0, 30.0):
            w = 0.1 if modpo else None
            beta = 0.1
            scale_z = beta / (w or 1.0)
            inp = pref_inputs(gen, 6, 0.0, scale_z=scale_z, target_z=target, w=w)
            cases.append(pref_case(inp, beta, loss_type, 1.0, w))
    # Exactly zero logits: identical chosen and rejected -> loss log 2.
    inp = pref_inputs(gen, 3, 5.0, w=0.5 if modpo else None)
    for k in ("policy", "ref", "margin"):
        if f"{k}_chosen" in inp:
            inp[f"{k}_rejected"] = list(inp[f"{k}_chosen"])
    cases.append(pref_case(inp, 0.1, "sigmoid", 1.0, 0.5 if modpo else None))
    return cases


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    data = {
        "generator": "tests/gen_loss_fixtures.py",
        "torch": torch.__version__,
        "sft": sft_cases(gen),
        "dpo": pref_cases(gen, modpo=False),
        "modpo": pref_cases(gen, modpo=True),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(data['sft'])} SFT, {len(data['dpo'])} DPO, {len(data['modpo'])} MODPO cases")


if __name__ == "__main__":
    main()
