# Sourced by the sbatch scripts of slurm/: how to launch modpo on the
# allocation's tasks.  One MPI rank per Slurm task; on GPU clusters one task
# per GPU (submit with --gpus-per-task=1: Slurm then gives each task its
# own GPU in CUDA_VISIBLE_DEVICES).
#
#   MODPO_BIN          the binary (default ./modpo, from the submit dir)
#   MODPO_LAUNCHER     srun (default) | mpirun
#   MODPO_SRUN_MPI     srun's --mpi plugin (default pmix; `srun --mpi=list`)
#   MODPO_OVERSUBSCRIBE=1  allow more ranks than cores (tests on small machines)

MODPO_BIN=${MODPO_BIN:-./modpo}
MODPO_LAUNCHER=${MODPO_LAUNCHER:-srun}
MODPO_SRUN_MPI=${MODPO_SRUN_MPI:-pmix}

# One line per task: what Slurm told it (SLURM_PROCID / SLURM_LOCALID /
# SLURM_NTASKS) and where it runs.
modpo_show_tasks() {
    srun --ntasks="$SLURM_NTASKS" sh -c \
        'echo "task SLURM_PROCID=$SLURM_PROCID SLURM_LOCALID=$SLURM_LOCALID SLURM_NTASKS=$SLURM_NTASKS on $(hostname) CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-none}"'
}

# modpo_launch ARGS...: runs $MODPO_BIN ARGS on every task of the job.
modpo_launch() {
    case "$MODPO_LAUNCHER" in
    srun)
        srun --ntasks="$SLURM_NTASKS" --mpi="$MODPO_SRUN_MPI" --kill-on-bad-exit=1 "$MODPO_BIN" "$@" ;;
    mpirun)
        extra=""
        [ "$(id -u)" -eq 0 ] && extra="$extra --allow-run-as-root"
        [ -n "${MODPO_OVERSUBSCRIBE:-}" ] && extra="$extra --oversubscribe"
        # mpirun reads the allocation (nodes, tasks) from Slurm itself.
        # shellcheck disable=SC2086
        mpirun $extra -np "$SLURM_NTASKS" "$MODPO_BIN" "$@" ;;
    *)
        echo "MODPO_LAUNCHER must be srun or mpirun, not '$MODPO_LAUNCHER'" >&2
        return 2 ;;
    esac
}
