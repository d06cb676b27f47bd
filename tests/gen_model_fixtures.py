#!/usr/bin/env python3
"""Reference fixtures for the model-file tests (check_safetensors, check_model_io,
check_peft), written by the real libraries: safetensors, torch, transformers, peft.

    python tests/gen_model_fixtures.py                  # (re)write tests/fixtures/model/
    python tests/gen_model_fixtures.py --check-c DIR    # verify what the C tests wrote

The second form checks the other direction: build/tests/check_peft writes, under
build/test-out/peft/ (the default DIR), an adapter in PEFT's format and the model
that `lora_merge_into` + `llama_model_save` made from it.  We load the adapter with
peft.PeftModel.from_pretrained on the fixture base model and require its logits to
equal those of the C-merged model (loaded with transformers) and PEFT's own
merge_and_unload weights to equal the C-merged weights.

Everything is seeded, so rerunning gives the same bytes (modulo library versions).
Fixtures stay tiny: hidden 16, 2 layers, vocab 64.
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "model")
ROOT = os.path.dirname(HERE)


def tiny_config(**kw):
    from transformers import LlamaConfig
    base = dict(hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1,
                eos_token_id=2, tie_word_embeddings=False)
    base.update(kw)
    return LlamaConfig(**base)


def random_llama(config, seed):
    """A Llama whose weights are all random (norms too, so a loader that
    confuses two tensors of equal shape is caught)."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if p.dim() == 1 else 0.0))
    return model.eval()


def tensor_summary(state):
    """Per tensor: shape, first values and the sum in double, for the C tests."""
    out = {}
    for name, t in sorted(state.items()):
        f = t.detach().to(torch.float64).flatten()
        out[name] = {"shape": list(t.shape), "first": [float(x) for x in f[:4]],
                     "sum": float(f.sum())}
    return out


def write_json(path, obj):
    with open(path, "w") as fp:
        json.dump(obj, fp, indent=1, sort_keys=True)
        fp.write("\n")


def clean_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


# ------------------------------------------------------------------ safetensors

def bf16_cases():
    """fp32 values whose bf16 rounding is easy to get wrong: exact ties (round
    to even, both directions), just above/below ties, carries into the exponent,
    overflow to inf, subnormals, signed zero, inf and NaN, plus random values."""
    one = 1.0
    vals = [0.0, -0.0, one, -one, one + 2 ** -8, one + 3 * 2 ** -8, one + 2 ** -8 + 2 ** -20,
            one + 2 ** -8 - 2 ** -20, -(one + 3 * 2 ** -8), 2 - 2 ** -9, 3.3895e38, 3.4028e38,
            1e-40, -1e-40, 1.1754944e-38, 65504.0, 1e-5, 3.14159265, float("inf"),
            float("-inf"), float("nan")]
    src = torch.tensor(vals, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    rnd = torch.randn(43, generator=g) * torch.logspace(-6, 6, 43)
    # ties constructed at random magnitudes: low 16 bits exactly 0x8000
    ties = (torch.randint(0, 2 ** 31, (16,), generator=g, dtype=torch.int64) & ~0xFFFF) | 0x8000
    ties = (ties & 0x7F7FFFFF).to(torch.int32).view(torch.float32)
    return torch.cat([src, rnd.float(), ties])


def gen_safetensors(out):
    clean_dir(out)
    f16 = torch.tensor([1.0, -2.5, 6.103515625e-05, 5.960464477539063e-08, 65504.0, -0.0],
                       dtype=torch.float16)
    tensors = {
        "f32": torch.tensor([[1.5, -2.25, 3.0], [0.1, 1e-30, -7.0]], dtype=torch.float32),
        "bf16": torch.tensor([1.0, -0.5, 3.140625, 1e10, -1e-10], dtype=torch.bfloat16),
        "f16": f16,
        "i32": torch.tensor([[-3, 0], [7, 2147483647]], dtype=torch.int32),
        "i64": torch.tensor([-(2 ** 40), 5, 0], dtype=torch.int64),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }
    save_file(tensors, os.path.join(out, "dtypes.safetensors"),
              metadata={"note": "modpo fixture"})  # one key: the writer's order is a hash's
    expected = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                    "values": [float(x) for x in v.to(torch.float64).flatten()]}
                for k, v in tensors.items()}
    write_json(os.path.join(out, "dtypes.json"), expected)

    src = bf16_cases()
    save_file({"src": src, "ref": src.to(torch.bfloat16)},
              os.path.join(out, "bf16_round.safetensors"))


# ------------------------------------------------------------------- models

def gen_models(out):
    from transformers import AutoModelForCausalLM

    gqa = random_llama(tiny_config(), seed=1)
    d = os.path.join(out, "tiny-gqa")
    clean_dir(d)
    gqa.save_pretrained(d)
    write_json(os.path.join(out, "tiny-gqa.expected.json"), tensor_summary(gqa.state_dict()))

    # Same weights in two shards, as transformers splits them.
    d = os.path.join(out, "tiny-gqa-sharded")
    clean_dir(d)
    gqa.save_pretrained(d, max_shard_size="20KB")
    shards = [f for f in os.listdir(d) if f.startswith("model-")]
    assert len(shards) == 2, shards

    # Tied embeddings, multi-head attention, bf16 on disk, a non-default theta.
    cfg = tiny_config(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500000.0,
                      vocab_size=48)
    tied = random_llama(cfg, seed=2).to(torch.bfloat16)
    d = os.path.join(out, "tiny-tied-bf16")
    clean_dir(d)
    tied.save_pretrained(d)
    state = {k: v for k, v in tied.state_dict().items() if k != "lm_head.weight"}
    write_json(os.path.join(out, "tiny-tied-bf16.expected.json"), tensor_summary(state))
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    return AutoModelForCausalLM


# --------------------------------------------------------------------- PEFT

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def gen_peft(out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    base_dir = os.path.join(out, "tiny-gqa")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(7)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=6, target_modules=TARGETS,
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():  # PEFT starts B at zero: make the adapter do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    d = os.path.join(out, "peft-adapter")
    clean_dir(d)
    model.save_pretrained(d)
    os.remove(os.path.join(d, "README.md"))  # PEFT's model card: noise in a fixture
    # Point the config at the fixture by its repository path, not this machine's.
    cfg_path = os.path.join(d, "adapter_config.json")
    with open(cfg_path) as fp:
        cfg = json.load(fp)
    cfg["base_model_name_or_path"] = "tests/fixtures/model/tiny-gqa"
    cfg["target_modules"] = sorted(cfg["target_modules"])  # a set: order varies per run
    write_json(cfg_path, cfg)

    merged = model.merge_and_unload().state_dict()
    adapted = {k: v.contiguous() for k, v in merged.items()
               if any(f".{t}." in k for t in TARGETS)}
    save_file(adapted, os.path.join(out, "peft-merged.safetensors"))


# --------------------------------------------------------- checking C output

def check_c_outputs(cdir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base_dir = os.path.join(OUT, "tiny-gqa")
    ids = torch.tensor([[1, 5, 9, 33, 17, 60, 2, 11, 42, 8]])
    adapter_dir = os.path.join(cdir, "adapter")
    merged_dir = os.path.join(cdir, "merged")

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        logits_peft = peft_model(ids).logits
    merged_c, info = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32,
                                                         output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading {merged_dir}: {bad}"
    with torch.no_grad():
        logits_c = merged_c.eval()(ids).logits
    err = (logits_peft - logits_c).abs().max().item()
    print(f"PEFT-loaded C adapter vs C-merged model: max |logit diff| = {err:.3g}")
    assert err < 1e-5, err

    peft_merged = peft_model.merge_and_unload().state_dict()
    c_state = merged_c.state_dict()
    worst = max((peft_merged[k] - c_state[k]).abs().max().item() for k in peft_merged)
    print(f"PEFT merge_and_unload vs C merge: max |weight diff| = {worst:.3g}")
    assert worst < 1e-6, worst
    print("C outputs OK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check-c", nargs="?", const=os.path.join(ROOT, "build", "test-out", "peft"),
                    metavar="DIR", help="verify the adapter and merged model the C tests wrote")
    args = ap.parse_args()
    if args.check_c:
        check_c_outputs(args.check_c)
        return
    os.makedirs(OUT, exist_ok=True)
    gen_safetensors(os.path.join(OUT, "st"))
    gen_models(OUT)
    gen_peft(OUT)
    for r, _, fs in os.walk(OUT):  # libraries write 0600; fixtures are for everyone
        for f in fs:
            os.chmod(os.path.join(r, f), 0o644)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    sys.exit(main())
