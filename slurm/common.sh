# Shared part of slurm/pretrain.sbatch and slurm/finetune.sbatch (sourced by them; docs/cluster.md explains it).
#
#   physiowave_setup            offline environment, threads, rendezvous endpoint, log of the job's shape
#   physiowave_batch            GLOBAL_BATCH, ACCUM and the GPUs → BATCH_PER_GPU (or an error)
#   physiowave_cache FILE...    copy FILEs to node-local disk once per node (CACHE_DATA=1) → prints the paths to use
#   physiowave_run SCRIPT ARG...  one torchrun per node (srun), forwarding the time-limit signal to training, and
#                                 requeueing the job when training stopped for it; exits with training's status
#
# Exit status of training (every process): 0 done, 1 a one-line error, 128+signal stopped by --preempt_signals
# after writing its checkpoint (143 SIGTERM, 138 SIGUSR1). The same command with --resume auto continues.

# Tunables (environment; the templates set the first two)
: "${GPUS_PER_NODE:=${SLURM_GPUS_ON_NODE:-1}}"    # processes per node (one per GPU)
: "${RDZV_PORT:=29500}"                            # port of the c10d rendezvous on the first node
: "${MAX_REQUEUES:=20}"                            # give up requeueing after this many restarts
: "${CACHE_DATA:=0}"                               # 1: copy the HDF5 files to node-local disk first
: "${CACHE_DIR:=${TMPDIR:-/tmp}/physiowave-${SLURM_JOB_ID:-local}}"
: "${STOP_GRACE:=600}"                             # seconds torchrun lets its workers take to stop (>= the signal's lead time)
: "${PYTHON:=python}"

physiowave_setup() {
    # Compute nodes download nothing: hub clients read their caches, pip its wheels; fetch on the login node.
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1 WANDB_MODE=offline
    export MPLBACKEND=Agg PYTHONUNBUFFERED=1
    # CPU threads per process: the task's CPUs shared by the node's processes (at least 1)
    local cpus=${SLURM_CPUS_PER_TASK:-$GPUS_PER_NODE}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cpus / GPUS_PER_NODE > 0 ? cpus / GPUS_PER_NODE : 1 ))}
    NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    echo "job ${SLURM_JOB_ID}: ${NNODES} node(s) × ${GPUS_PER_NODE} process(es), rendezvous ${HEAD_NODE}:${RDZV_PORT}," \
         "restart ${SLURM_RESTART_COUNT:-0}, $(date -u +%FT%TZ)"
}

physiowave_batch() {
    # GLOBAL_BATCH and ACCUM → BATCH_PER_GPU, or one line saying why the GPUs cannot share that batch
    local gpus=$(( GPUS_PER_NODE * NNODES ))
    BATCH_PER_GPU=$(( GLOBAL_BATCH / (gpus * ACCUM) ))
    if [ "$BATCH_PER_GPU" -lt 1 ] || [ $(( BATCH_PER_GPU * gpus * ACCUM )) -ne "$GLOBAL_BATCH" ]; then
        echo "error: GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of $gpus GPUs × ACCUM=$ACCUM: change GLOBAL_BATCH" \
             "(and LR with it) or ACCUM" >&2
        return 1
    fi
    echo "global batch $GLOBAL_BATCH = $BATCH_PER_GPU per GPU × $gpus GPU(s) × $ACCUM accumulation; lr $LR"
}

physiowave_cache() {
    # One copy per node, same path on every node (every rank must name the same files); written under a temporary
    # name and renamed, so a copy cut short is never used and a requeued job on the same node reuses a finished one.
    # (FILEs may also be comma-separated lists, as --train_files takes them)
    local arg f parts list=()
    for arg in "$@"; do IFS=', ' read -ra parts <<< "$arg"; list+=("${parts[@]}"); done
    if [ "$CACHE_DATA" != 1 ]; then printf '%s\n' "${list[@]}"; return; fi
    for f in "${!list[@]}"; do list[f]=$(readlink -f "${list[f]}"); done
    local twice; twice=$(printf '%s\n' "${list[@]##*/}" | sort | uniq -d | head -n 1)
    if [ -n "$twice" ]; then echo "error: CACHE_DATA=1: two files are named $twice; rename one" >&2; return 1; fi
    srun --ntasks-per-node=1 --ntasks="$NNODES" bash -c '
        mkdir -p "$0" && for f in "$@"; do
            d="$0/$(basename "$f")"
            [ -f "$d" ] && [ "$(stat -c "%s %Y" "$d")" = "$(stat -c "%s %Y" "$f")" ] && continue  # size, mtime
            cp -p "$f" "$d.part.$$" && mv -f "$d.part.$$" "$d" || exit 1
        done' "$CACHE_DIR" "${list[@]}" >&2 || { echo "error: copying the data to $CACHE_DIR failed" >&2; return 1; }
    for f in "${list[@]}"; do echo "$CACHE_DIR/$(basename "$f")"; done
}

_physiowave_forward() {  # the batch shell got $1 (--signal=B:...): pass it to the training processes
    STOP_SIGNAL=$1
    echo "job ${SLURM_JOB_ID}: got SIG$1, asking training to stop after its current step" >&2
    [ -n "${SRUN_PID:-}" ] && kill -s "$1" "$SRUN_PID" 2>/dev/null  # srun forwards it to the torchrun launchers
}

physiowave_run() {
    local script=$1; shift
    STOP_SIGNAL=
    trap '_physiowave_forward USR1' USR1
    # SIGTERM (scancel, or preemption, which SLURM requeues itself with --requeue) reaches every process of the job
    # from SLURM: this shell only stays until training has written its checkpoint, and requeues nothing
    trap 'echo "job ${SLURM_JOB_ID}: got SIGTERM" >&2' TERM
    srun --ntasks-per-node=1 --ntasks="$NNODES" --kill-on-bad-exit=0 \
        "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" \
        --rdzv_backend c10d --rdzv_endpoint "${HEAD_NODE}:${RDZV_PORT}" --rdzv_id "${SLURM_JOB_ID}" \
        --signals_to_handle SIGTERM,SIGINT,SIGUSR1 --shutdown_timeout "$STOP_GRACE" \
        "$script" "$@" &
    SRUN_PID=$!
    local status=0
    while :; do  # `wait` returns early when a trapped signal arrives; wait again until srun has ended
        wait "$SRUN_PID"; status=$?
        kill -0 "$SRUN_PID" 2>/dev/null || break
    done
    if [ -n "$STOP_SIGNAL" ] && [ "$status" -ne 0 ]; then  # (a run that finished meanwhile is done)
        if [ "${SLURM_RESTART_COUNT:-0}" -lt "$MAX_REQUEUES" ]; then
            echo "job ${SLURM_JOB_ID}: training stopped (status $status); requeueing, it continues with --resume auto" >&2
            scontrol requeue "$SLURM_JOB_ID"
        else
            echo "job ${SLURM_JOB_ID}: stopped after ${SLURM_RESTART_COUNT} restarts (MAX_REQUEUES); not requeued" >&2
        fi
    fi
    return "$status"
}
