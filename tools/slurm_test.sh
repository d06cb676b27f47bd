#!/bin/sh
# The Slurm test (issue 5): starts munge, slurmctld and slurmd as a one-node
# cluster on this machine -- private config, key, sockets, ports and state in
# a temporary directory, nothing of the system's touched -- submits the tiny
# pipeline with sbatch (slurm/pipeline.sbatch, 2 tasks, srun + PMIx), waits
# for it and checks its outputs; then the job-array route
# (slurm/submit_grid.sh: prepare -> one w per array task -> generate/score)
# on a small grid; then stops the daemons it started.
#
# Installs nothing: tools/install_deps.sh installs slurm-wlm and munge.
# Run from the repository root after `make`:   sh tools/slurm_test.sh
# MODPO_SLURM_KEEP=1 keeps the temporary directory (logs) afterwards.
set -eu
cd "$(dirname "$0")/.."

for b in munged mungekey slurmctld slurmd sbatch sinfo squeue scontrol; do
    command -v "$b" > /dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin"
    command -v "$b" > /dev/null 2>&1 || { echo "slurm_test: $b not found (sh tools/install_deps.sh installs slurm-wlm and munge)" >&2; exit 1; }
done
[ -x ./modpo ] || { echo "slurm_test: ./modpo not built (run make)" >&2; exit 1; }

W=$(mktemp -d /tmp/modpo-slurm-XXXXXX)
chmod 700 "$W"
HOST=$(hostname -s)
USER_NAME=$(id -un)
NCPU=$(nproc)
MEM=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
# Private ports, so a Slurm already on the machine (or a second test) is not disturbed.
BASE=$(( 20000 + ($$ % 2000) * 2 ))
PIDS=""

stop() {
    rc=$?
    set +e
    if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
        scancel --quiet --user="$USER_NAME" > /dev/null 2>&1
    fi
    for p in $PIDS; do kill "$p" 2> /dev/null; done
    sleep 1
    for p in $PIDS; do kill -9 "$p" 2> /dev/null; done
    if [ "$rc" -ne 0 ]; then
        echo "slurm_test: FAILED; logs in $W" >&2
        for f in "$W"/log/*.log "$W"/job/*.out "$W"/job/*.err; do
            [ -f "$f" ] && { echo "---- $f" >&2; tail -25 "$f" >&2; }
        done
    elif [ -z "${MODPO_SLURM_KEEP:-}" ]; then
        rm -rf "$W"
    fi
    exit "$rc"
}
trap stop EXIT INT TERM

mkdir -p "$W/munge" "$W/state" "$W/spool" "$W/log" "$W/job" "$W/run"
chmod 700 "$W/munge"

# ---- munge: a private key and socket --------------------------------------
mungekey --create --keyfile="$W/munge/munge.key" 2> /dev/null ||
    dd if=/dev/urandom of="$W/munge/munge.key" bs=1 count=1024 2> /dev/null
chmod 400 "$W/munge/munge.key"
SOCK="$W/munge/munge.socket"
munged --foreground --force --socket="$SOCK" --key-file="$W/munge/munge.key" \
    --pid-file="$W/munge/munged.pid" --log-file="$W/log/munged.log" \
    --seed-file="$W/munge/munged.seed" > "$W/log/munged.stdout" 2>&1 &
PIDS="$PIDS $!"
for i in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { echo "slurm_test: munged did not start" >&2; exit 1; }

# ---- slurm.conf: one node, this machine ------------------------------------
export SLURM_CONF="$W/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=modpotest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$BASE
SlurmdPort=$((BASE + 1))
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
SlurmUser=$USER_NAME
SlurmdUser=root
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/run/slurmctld.pid
SlurmdPidFile=$W/run/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
# cgroup plugins are not used (proctrack/pgid, task/none); this cgroup.conf
# (read from next to slurm.conf) keeps slurmd away from systemd.
printf 'CgroupPlugin=autodetect\nIgnoreSystemd=yes\n' > "$W/cgroup.conf"

slurmctld -D -i -f "$SLURM_CONF" > "$W/log/slurmctld.stdout" 2>&1 &
PIDS="$PIDS $!"
slurmd -D -f "$SLURM_CONF" -N "$HOST" > "$W/log/slurmd.stdout" 2>&1 &
PIDS="$PIDS $!"

echo "slurm_test: waiting for the node"
ok=0
for i in $(seq 60); do
    st=$(sinfo -h -N -o '%t' 2> /dev/null | head -1 || true)
    case "$st" in idle*|mix*|alloc*) ok=1; break ;; esac
    sleep 1
done
[ "$ok" -eq 1 ] || { echo "slurm_test: the node did not come up (state '$st')" >&2; sinfo -N >&2 || true; exit 1; }
sinfo

# ---- the tiny pipeline through sbatch --------------------------------------
OUT="$W/run-out"
echo "slurm_test: sbatch slurm/pipeline.sbatch (2 tasks)"
JOB=$(sbatch --parsable --ntasks=2 --nodes=1 --time=20 --chdir="$PWD" \
    --output="$W/job/pipeline-%j.out" --error="$W/job/pipeline-%j.err" \
    --export=ALL,MODPO_ARGS="--set run.output_root=$OUT --set model.path=$OUT/model",MODPO_OVERSUBSCRIBE=1 \
    slurm/pipeline.sbatch)
echo "slurm_test: job $JOB submitted"
# wait_job ID: waits until the job ends; its final state in $state.
wait_job() {
    state=""
    for i in $(seq 900); do
        state=$(scontrol show job "$1" 2> /dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -1)
        case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) return 0 ;; esac
        sleep 1
    done
}
wait_job "$JOB"
echo "slurm_test: job $JOB ended $state"
cat "$W"/job/pipeline-"$JOB".out
[ "$state" = COMPLETED ] || { echo "slurm_test: job $JOB ended $state" >&2; exit 1; }

# ---- outputs ----------------------------------------------------------------
R="$OUT/tiny"
for f in sft/DONE dpo/DONE check-margin/DONE modpo-w0.2/DONE modpo-w0.8/DONE \
         modpo-w0.2/adapter/adapter_model.safetensors score/summary.tsv score/trade-off.svg \
         precompute/helpfulness-train-ref.h5 precompute/helpfulness-train-margin.h5; do
    [ -s "$R/$f" ] || { echo "slurm_test: missing $R/$f" >&2; exit 1; }
done
for m in sft modpo-w0.2 modpo-w0.8; do
    for f in 00000-of-00002.jsonl 00001-of-00002.jsonl; do
        [ -f "$R/gen/$m/$f" ] || { echo "slurm_test: missing $R/gen/$m/$f" >&2; exit 1; }
    done
done
grep -q '"ranks":2' "$R/sft/metrics.jsonl" || { echo "slurm_test: SFT did not run on 2 ranks" >&2; exit 1; }
grep -q 'modpo-w0.8' "$W"/job/pipeline-"$JOB".out || { echo "slurm_test: no summary table in the job output" >&2; exit 1; }
grep -q 'SLURM_PROCID' "$W"/job/pipeline-"$JOB".out || { echo "slurm_test: the job did not report its tasks" >&2; exit 1; }
echo "slurm_test: pipeline job OK (job $JOB, 2 tasks, outputs checked)"

# ---- the job-array route: prepare -> one w per array task -> generate/score --
OUT2="$W/grid-out"
echo "slurm_test: slurm/submit_grid.sh (w grid 0.3 0.7 as a job array)"
line=$(MODPO_W_GRID="0.3 0.7" MODPO_ARGS="--set run.output_root=$OUT2 --set model.path=$OUT/model" \
    sh slurm/submit_grid.sh --ntasks=2 --nodes=1 --time=20 --chdir="$PWD" \
    --output="$W/job/grid-%j.out" --error="$W/job/grid-%j.err")
echo "slurm_test: $line"
FIN=$(echo "$line" | awk '{print $NF}')
wait_job "$FIN"
echo "slurm_test: final job $FIN ended $state"
[ "$state" = COMPLETED ] || { echo "slurm_test: the grid's final job ended $state" >&2; exit 1; }
R2="$OUT2/tiny"
for f in precompute/helpfulness-train-margin.h5 modpo-w0.3/DONE modpo-w0.7/DONE \
         gen/modpo-w0.3/00000-of-00002.jsonl gen/modpo-w0.7/00001-of-00002.jsonl score/summary.tsv; do
    [ -e "$R2/$f" ] || { echo "slurm_test: missing $R2/$f" >&2; exit 1; }
done
grep -q "modpo-w0.7" "$R2/score/summary.tsv" || { echo "slurm_test: no w0.7 row in the grid's summary" >&2; exit 1; }
# the prepare job computed the frozen logps once; both array tasks read them
n_read=$(grep -l "precompute: .* read from the cache" "$W"/job/grid-*.err | wc -l)
n_comp=$(grep -l "precompute: .* computed" "$W"/job/grid-*.err | wc -l)
[ "$n_read" -eq 2 ] && [ "$n_comp" -eq 1 ] ||
    { echo "slurm_test: precompute computed in $n_comp jobs, read in $n_read (expected 1 and 2)" >&2; exit 1; }
echo "slurm_test: OK (pipeline job $JOB; grid route ending in job $FIN)"
