# Sourced by the batch scripts: how `rag` runs (container or plain Python), logging,
# and forwarding Slurm's signals so a job checkpoints before it is stopped.
#
#   RAG_HOME        the repository (default: the directory sbatch was run from)
#   RAG_CONTAINER   an Apptainer/Singularity image; unset = plain Python
#   RAG_APPTAINER   apptainer or singularity (default: whichever is installed)
#   RAG_PYTHON      the interpreter for plain Python (default: python3)
#   HF_HOME         Hugging Face cache, bind-mounted into the container (offline nodes)
set -euo pipefail
RAG_HOME=${RAG_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$RAG_HOME"
mkdir -p logs
echo "rag-slurm: job ${SLURM_JOB_ID:-?} (${SLURM_JOB_NAME:-?}) on $(hostname -s) at $(date -Is);" \
     "started $(date +%s.%N); CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}" >&2

rag_cmd() {
  # The command line that runs `rag "$@"` in the chosen environment.
  if [ -n "${RAG_CONTAINER:-}" ]; then
    local runner=${RAG_APPTAINER:-$(command -v apptainer || command -v singularity)}
    local binds="$RAG_HOME"
    [ -n "${HF_HOME:-}" ] && binds="$binds,$HF_HOME"
    echo "$runner exec --nv --bind $binds --env HF_HOME=${HF_HOME:-},HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} $RAG_CONTAINER"
  else
    echo "${RAG_PYTHON:-python3}"
  fi
}

run() {
  # Run a command in the background and pass Slurm's warning signal (USR1, from
  # --signal=B:USR1@SECONDS) and scancel's TERM on to it: the training loop saves a
  # checkpoint and exits; after USR1 the job is requeued and resumes from it.
  "$@" &
  local child=$! requeue=0
  trap 'requeue=1; kill -USR1 $child 2>/dev/null || true' USR1
  trap 'kill -TERM $child 2>/dev/null || true' TERM
  local rc=0
  while :; do
    wait $child && rc=0 || rc=$?
    kill -0 $child 2>/dev/null || break           # a trapped signal interrupted wait
  done
  if [ "$requeue" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "rag-slurm: time limit near: checkpoint saved, requeueing ${SLURM_JOB_ID}" >&2
    scontrol requeue "$SLURM_JOB_ID"
  fi
  return $rc
}

run_rag() {
  # shellcheck disable=SC2046 # rag_cmd is a command line by design
  run $(rag_cmd) -m rag "$@"
}
