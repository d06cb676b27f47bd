#!/usr/bin/env python3
"""Reference for tests/check_training_parity.c: the objectives and ten MODPO
optimizer steps computed by torch + transformers + PEFT, as Hugging Face's
Trainer would run them, on the `gqa` model of tests/fixtures/backend.

    /work/venv/bin/python tests/gen_training_fixtures.py

Writes tests/fixtures/training/:
    adapter-init/          the fresh policy LoRA (PEFT init: A kaiming-uniform, B zero)
    reference.safetensors
        tokens, lengths, label_mask   [2P, T]: pairs as rows [c_0..c_{P-1}, r_0..r_{P-1}]
        objective.{sft,dpo,modpo}.loss           [1] with the backend fixture's
        objective.{sft,dpo,modpo}.grad.<name>    adapter as the policy, pairs 0..3
        ref_logps, margin_logps   [2P] frozen logps (no adapter / the margin adapter)
        order                     [steps*accum*batch] pair index of each micro-batch slot
        step_loss, step_grad_norm, step_lr  [steps]
        final.<name>              the policy's LoRA weights after the last step
The margin adapter is tests/fixtures/backend/gqa/adapter (nonzero B).
Settings: MODPO w 0.4, beta 0.1, margin_beta -0.1 (as in objective.modpo), sigmoid;
AdamW lr 5e-3, wd 0.05; cosine schedule, 2 warmup steps of 10; clip 0.05;
batch 2 pairs x grad accum 2."""

import os

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel
from safetensors.torch import save_file
from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "fixtures", "backend", "gqa")
OUT = os.path.join(HERE, "fixtures", "training")
N_PAIRS, STEPS, ACCUM, BATCH = 8, 10, 2, 2
BETA, W, MARGIN_BETA, DPO_BETA = 0.1, 0.4, -0.1, 0.1
LR, WD, WARMUP, CLIP = 5e-3, 0.05, 2, 0.05


def make_pairs(vocab):
    lengths, masks, rows = [], [], []
    chosen, rejected = [], []
    for _ in range(N_PAIRS):
        p = int(torch.randint(2, 5, ()))
        prompt = [1] + torch.randint(3, vocab, (p - 1,)).tolist()
        for side in (chosen, rejected):
            n = int(torch.randint(2, 7, ()))
            side.append((prompt + torch.randint(3, vocab, (n,)).tolist() + [2], p))
    seqs = chosen + rejected
    T = max(len(s) for s, _ in seqs)
    tokens = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, (s, p) in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
        mask[i, p:len(s)] = 1
        lengths.append(len(s))
    return tokens, torch.tensor(lengths), mask


def logps(model, tokens, lengths, mask):
    T = tokens.shape[1]
    attn = (torch.arange(T)[None, :] < lengths[:, None]).long()
    logits = model(input_ids=tokens, attention_mask=attn).logits
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = torch.gather(lp, 2, tokens[:, 1:, None]).squeeze(2)
    return (tok * mask[:, 1:]).sum(1)


def rows(pairs):
    return list(pairs) + [N_PAIRS + i for i in pairs]


def modpo_loss(pi, ref, margin, n):
    r = (BETA * (pi - ref) - (1 - W) * margin) / W
    return -F.logsigmoid(r[:n] - r[n:]).mean()


def dpo_loss(pi, ref, n):
    z = DPO_BETA * ((pi[:n] - ref[:n]) - (pi[n:] - ref[n:]))
    return -F.logsigmoid(z).mean()


def lora_tensors(model, adapter, prefix):
    out = {}
    for name, p in model.named_parameters():
        if f".{adapter}." in name and "lora_" in name:
            key = prefix + name.replace(f".{adapter}", "")
            out[key] = (p.grad if prefix.endswith("grad.") else p).detach().clone()
    return out


def objective_grads(model, data, ref_all, margin_all):
    """Each objective's loss and LoRA gradients with the margin adapter as the policy."""
    tokens, lengths, mask = data
    idx = rows(range(4))
    model.set_adapter("margin")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, p in model.named_parameters():
        if ".margin." in name:
            p.requires_grad_(True)
    out = {}
    for obj in ("sft", "dpo", "modpo"):
        model.zero_grad()
        pi = logps(model, tokens[idx], lengths[idx], mask[idx])
        if obj == "sft":
            n_tok = mask[idx[:4], 1:].sum()
            loss = -pi[:4].sum() / n_tok
        elif obj == "dpo":
            loss = dpo_loss(pi, ref_all[idx], 4)
        else:
            loss = modpo_loss(pi, ref_all[idx], margin_all[idx], 4)
        loss.backward()
        out[f"objective.{obj}.loss"] = loss.detach().reshape(1)
        out.update(lora_tensors(model, "margin", f"objective.{obj}.grad."))
    return out


def train(model, data, ref_all, margin_all, order):
    tokens, lengths, mask = data
    model.set_adapter("default")
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if ".default." in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD, betas=(0.9, 0.999), eps=1e-8)
    sched = get_cosine_schedule_with_warmup(opt, WARMUP, STEPS)
    losses, norms, lrs = [], [], []
    for step in range(STEPS):
        opt.zero_grad()
        total = 0.0
        for m in range(ACCUM):
            base = (step * ACCUM + m) * BATCH
            idx = rows(order[base:base + BATCH].tolist())
            pi = logps(model, tokens[idx], lengths[idx], mask[idx])
            loss = modpo_loss(pi, ref_all[idx], margin_all[idx], BATCH)
            (loss / ACCUM).backward()
            total += loss.item() / ACCUM
        lrs.append(sched.get_last_lr()[0])
        norms.append(torch.nn.utils.clip_grad_norm_(params, CLIP).item())
        opt.step()
        sched.step()
        losses.append(total)
    return torch.tensor(losses, dtype=torch.float64), torch.tensor(norms, dtype=torch.float64), \
        torch.tensor(lrs, dtype=torch.float64)


def main():
    torch.manual_seed(7)
    torch.set_num_threads(1)
    base = LlamaForCausalLM.from_pretrained(os.path.join(BASE, "model"), attn_implementation="eager")
    base = base.float().eval()
    model = PeftModel.from_pretrained(base, os.path.join(BASE, "adapter"), adapter_name="margin")
    model.add_adapter("default", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, bias="none"))
    model.set_adapter("default")
    model.save_pretrained(os.path.join(OUT, "adapter-init"), selected_adapters=["default"])
    data = make_pairs(base.config.vocab_size)
    with torch.no_grad():
        with model.disable_adapter():
            ref_all = logps(model, *data)
        model.set_adapter("margin")
        margin_lp = logps(model, *data)
    margin_all = MARGIN_BETA * (margin_lp - ref_all)
    order = torch.cat([torch.randperm(N_PAIRS) for _ in range(5)])[:STEPS * ACCUM * BATCH]
    ref = objective_grads(model, data, ref_all, margin_all)
    losses, norms, lrs = train(model, data, ref_all, margin_all, order)
    ref.update(lora_tensors(model, "default", "final."))
    tokens, lengths, mask = data
    ref.update({"tokens": tokens.int(), "lengths": lengths.int(), "label_mask": mask.int(),
                "ref_logps": ref_all, "margin_logps": margin_lp, "order": order.int(),
                "step_loss": losses, "step_grad_norm": norms, "step_lr": lrs})
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"))
    readme = os.path.join(OUT, "adapter-init", "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    print("losses", [round(x, 6) for x in losses.tolist()])
    print("grad norms", [round(x, 5) for x in norms.tolist()])


if __name__ == "__main__":
    main()
