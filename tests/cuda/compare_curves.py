"""Compares the train-loss curves of two or three modpo run folders stage by
stage: the first is the reference (CPU), the others are held to it.
    python3 compare_curves.py REF_RUN OTHER_RUN [OTHER_RUN ...]"""
import json
import os
import sys


def curves(run):
    out = {}
    for stage in sorted(os.listdir(run)):
        path = os.path.join(run, stage, "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = [json.loads(line) for line in open(path)]
        out[stage] = {r["step"]: r["loss"] for r in rows if r.get("kind") == "train"}
    return out


ref = curves(sys.argv[1])
for other in sys.argv[2:]:
    cur = curves(other)
    print(f"{other} vs {sys.argv[1]}: max relative train-loss difference per stage")
    for stage, losses in ref.items():
        if stage not in cur:
            continue
        common = sorted(set(losses) & set(cur[stage]))
        if not common:
            continue
        rel = [abs(cur[stage][s] - losses[s]) / max(abs(losses[s]), 1e-12) for s in common]
        worst = max(range(len(common)), key=lambda i: rel[i])
        s = common[worst]
        print(f"  {stage:14s} {len(common):3d} steps  max {rel[worst]*100:7.3f}% (step {s}: "
              f"cpu {losses[s]:.6f} vs {cur[stage][s]:.6f})  mean {sum(rel)/len(rel)*100:7.3f}%")
