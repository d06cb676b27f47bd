#!/bin/bash
# Data parallel on 2 GPUs (issue 6): the tiny SFT stage on 1 GPU and under
# mpirun on 2 GPUs (NCCL all-reduce) with the optimizer on the host and on
# the GPUs, adapters compared; then the whole tiny pipeline under
# mpirun -np 2 on the GPUs with the device optimizer.  Run on nvidia-h100-x2 with
# build-cuda/modpo and .device/lib.tgz carried; logs go to $OUT.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" .device
tar xzf .device/lib.tgz -C .device
export LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
B=build-cuda/modpo
MPI="mpirun --allow-run-as-root --oversubscribe -np 2 -x LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
$B init-model --preset tiny --out m > /dev/null
S="--set run.device=cuda --set model.path=m --set sft.steps=10 --set sft.save_steps=5 --set sft.eval_steps=5"
# run.optimizer: host is ZeRO-1 through the host; backend (auto's choice
# on GPUs) keeps it on the GPUs (NCCL all-reduce in place on the stream).
timeout 120 $B sft conf/tiny.cfg $S --set run.output_root=g1 > "$OUT/sft-1gpu.log" 2>&1; echo "sft 1 GPU exit $?"
timeout 120 $MPI $B sft conf/tiny.cfg $S --set run.optimizer=host --set run.output_root=g2 > "$OUT/sft-2gpu.log" 2>&1; echo "sft 2 GPUs (host optimizer) exit $?"
timeout 120 $MPI $B sft conf/tiny.cfg $S --set run.optimizer=backend --set run.output_root=g2b > "$OUT/sft-2gpu-backend.log" 2>&1
echo "sft 2 GPUs (device optimizer) exit $?"
python3 - <<'PY' 2>&1 | tee "$OUT/compare.txt"
from safetensors.numpy import load_file
import numpy as np
def adapter(root):
    return load_file(f"{root}/tiny/sft/adapter/adapter_model.safetensors")
def rel(a, b):
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a)
    return np.sqrt(num / sum(float((a[k] ** 2).sum()) for k in a))
g1, g2, g2b = adapter("g1"), adapter("g2"), adapter("g2b")
print(f"SFT adapter 1 GPU vs 2 GPUs, host optimizer:   relative difference {rel(g1, g2):.3e} over {len(g1)} tensors")
print(f"SFT adapter 1 GPU vs 2 GPUs, device optimizer: relative difference {rel(g1, g2b):.3e}")
print(f"2 GPUs, host vs device optimizer:              relative difference {rel(g2, g2b):.3e}")
PY
grep -h '"eval"' g1/tiny/sft/metrics.jsonl g2/tiny/sft/metrics.jsonl g2b/tiny/sft/metrics.jsonl | tee -a "$OUT/compare.txt"
t0=$SECONDS
timeout 240 $MPI $B pipeline conf/tiny.cfg --set run.device=cuda --set run.optimizer=backend --set model.path=m --set run.output_root=p2 > "$OUT/pipeline-2gpu.log" 2>&1
echo "pipeline on 2 GPUs (device optimizer) exit $? in $((SECONDS - t0)) s"
tail -5 "$OUT/pipeline-2gpu.log"
ls p2/tiny/gen/sft p2/tiny/score 2>&1 | tee -a "$OUT/compare.txt"
