#!/bin/sh
# The tiny pipeline under mpirun with each given rank count (default 1 2 4),
# each in a fresh output root; checks the artefacts and that the rank count
# shows in the shards and the metrics.  Run from the repository root after make.
#   sh tests/dist/pipeline_ranks.sh 1 2 4
set -eu
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- 1 2 4
T=$(mktemp -d /tmp/modpo-ranks-XXXXXX)
trap 'rm -rf "$T"' EXIT
ROOT_OPT=""
[ "$(id -u)" -eq 0 ] && ROOT_OPT="--allow-run-as-root"
./modpo init-model --preset tiny --out "$T/model" > /dev/null
for n in "$@"; do
    out="$T/np$n"
    start=$(date +%s)
    if ! timeout 900 mpirun --oversubscribe $ROOT_OPT -np "$n" ./modpo pipeline \
            --set run.output_root="$out" --set model.path="$T/model" --quiet \
            > "$T/np$n.out" 2> "$T/np$n.err"; then
        echo "pipeline on $n ranks FAILED:" >&2
        tail -30 "$T/np$n.err" >&2
        exit 1
    fi
    R="$out/tiny"
    shard=$(printf '%05d-of-%05d.jsonl' $((n - 1)) "$n")
    for f in sft/DONE dpo/DONE check-margin/DONE modpo-w0.2/DONE modpo-w0.8/DONE \
             score/summary.tsv score/trade-off.svg precompute/helpfulness-train-ref.h5; do
        [ -s "$R/$f" ] || { echo "pipeline on $n ranks: missing $R/$f" >&2; exit 1; }
    done
    # one shard per rank (a rank past the last generation batch writes an empty one)
    for m in sft modpo-w0.2 modpo-w0.8; do
        [ -f "$R/gen/$m/$shard" ] || { echo "pipeline on $n ranks: missing $R/gen/$m/$shard" >&2; exit 1; }
        lines=$(cat "$R"/gen/$m/*-of-*.jsonl | wc -l)
        [ "$lines" -eq 16 ] || { echo "pipeline on $n ranks: gen/$m holds $lines records, not 16" >&2; exit 1; }
    done
    if [ "$n" -gt 1 ]; then
        grep -q "\"ranks\":$n" "$R/sft/metrics.jsonl" || { echo "SFT did not run on $n ranks" >&2; exit 1; }
    fi
    # a rerun finds everything finished
    timeout 300 mpirun --oversubscribe $ROOT_OPT -np "$n" ./modpo pipeline \
        --set run.output_root="$out" --set model.path="$T/model" --quiet > /dev/null 2> "$T/np$n.rerun.err"
    grep -q "sft: finished before; skipped" "$T/np$n.rerun.err" || { echo "rerun on $n ranks did not skip" >&2; exit 1; }
    echo "pipeline on $n ranks: OK ($(( $(date +%s) - start )) s)"
    sed -n '/^model /,$p' "$T/np$n.out"
done
