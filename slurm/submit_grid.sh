#!/bin/sh
# Submits the job-array route as three dependent jobs:
#   prepare (SFT, DPO, check-margin, precompute)
#   -> modpo_array (one w per array task)
#   -> pipeline (generation and scoring; the trained stages are skipped).
# Usage: MODPO_W_GRID="0.1 0.2 0.4 0.6 0.8 0.9" sh slurm/submit_grid.sh [sbatch options...]
# The sbatch options (e.g. --ntasks=4 --gpus-per-task=1 --partition=gpu) go to all three.
set -eu
GRID=${MODPO_W_GRID:-"0.1 0.2 0.4 0.6 0.8 0.9"}
export MODPO_W_GRID="$GRID"
N=$(echo $GRID | wc -w)
GRID_CSV=$(echo $GRID | tr ' ' ',')
export MODPO_ARGS="${MODPO_ARGS:-} --set modpo.w=$GRID_CSV"
prep=$(sbatch --parsable "$@" slurm/prepare.sbatch)
arr=$(sbatch --parsable --dependency=afterok:"$prep" --array=0-$((N - 1)) "$@" slurm/modpo_array.sbatch)
fin=$(sbatch --parsable --dependency=afterok:"$arr" "$@" slurm/pipeline.sbatch)
echo "prepare $prep -> w array $arr (tasks 0-$((N - 1))) -> generate/score $fin"
