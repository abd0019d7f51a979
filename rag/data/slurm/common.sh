# Sourced by the batch scripts: how `rag` runs (container or plain Python), logging,
# and forwarding Slurm's signals so a job checkpoints before it is stopped.
#
#   RAG_HOME        the project directory: rag.toml, corpus, indexes, logs (default: the
#                   directory sbatch was run from)
#   RAG_SCRIPTS     where these scripts are (`rag slurm submit` sets it: the installed
#                   package's rag/data/slurm; default: RAG_HOME/scripts/slurm, a checkout)
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
  # The Python that runs `-m rag ...` in the chosen environment. In the container the
  # host environment passes through (Apptainer's default) and the image's %environment
  # fills in HF_HOME=/hf-cache and HF_HUB_OFFLINE=1 where the host sets nothing.
  if [ -n "${RAG_CONTAINER:-}" ]; then
    local runner=${RAG_APPTAINER:-$(command -v apptainer || command -v singularity)}
    local binds="$RAG_HOME"
    [ -n "${HF_HOME:-}" ] && binds="$binds,$HF_HOME"
    echo "$runner exec --nv --bind $binds $RAG_CONTAINER python"
  else
    echo "${RAG_PYTHON:-python3}"
  fi
}

run() {
  # Run a command in the background and pass Slurm's warning signal (USR1, from
  # --signal=B:USR1@SECONDS) and scancel's TERM on to it: training saves a checkpoint
  # and exits with 75; after the warning such a job is requeued and resumes from it.
  # RAG_FORWARD_SIGNAL=TERM forwards the warning as TERM (torchrun passes TERM, not
  # USR1, on to its workers).
  "$@" &
  local child=$! warned=0 rc=0 r
  trap 'warned=1; kill -"${RAG_FORWARD_SIGNAL:-USR1}" $child 2>/dev/null || true' USR1
  trap 'kill -TERM $child 2>/dev/null || true' TERM
  while :; do
    if wait "$child"; then rc=0; else rc=$?; fi
    kill -0 "$child" 2>/dev/null || break         # a trapped signal interrupted wait
  done
  if [ "$rc" -gt 128 ]; then                      # the child ended during the interruption
    if wait "$child" 2>/dev/null; then rc=0; else r=$?; [ "$r" -ne 127 ] && rc=$r; fi
  fi
  if [ "$warned" = 1 ] && [ "$rc" = 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "rag-slurm: time limit near: checkpoint saved, requeueing ${SLURM_JOB_ID}" >&2
    scontrol requeue "$SLURM_JOB_ID"
    return 0
  fi
  return "$rc"
}

run_rag() {
  # shellcheck disable=SC2046 # rag_cmd is a command line by design
  run $(rag_cmd) -m rag "$@"
}
