"""The batch scripts' shell helpers (scripts/slurm/common.sh), without a cluster:
container command lines, signal forwarding and requeueing, exercised with stub
apptainer/scontrol programs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _stub(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def _env(tmp_path, **extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _stub(bin_dir / "scontrol", f'echo "$@" >> {tmp_path}/scontrol.log\n')
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAG_HOME": str(REPO),
            "SLURM_JOB_ID": "42", **extra}


def test_container_mode_runs_rag_inside_the_image(tmp_path):
    stub = _stub(tmp_path / "apptainer",
                 f'echo "$@" > {tmp_path}/apptainer.log\n'
                 # drop "exec --nv --bind BINDS IMAGE", run the rest (python -m rag ...)
                 f'shift 5; exec {sys.executable} "${{@:2}}"\n')
    proc = subprocess.run(["bash", "-c", "source scripts/slurm/common.sh; run_rag --version"],
                          cwd=REPO, capture_output=True, text=True,
                          env=_env(tmp_path, RAG_CONTAINER="/images/rag.sif",
                                   RAG_APPTAINER=str(stub), HF_HOME="/hf"))
    assert proc.returncode == 0, proc.stderr
    assert "version" in proc.stdout
    assert (tmp_path / "apptainer.log").read_text().split() == [
        "exec", "--nv", "--bind", f"{REPO},/hf", "/images/rag.sif", "python", "-m", "rag",
        "--version"]


def _run_child(tmp_path, child_exit: int) -> tuple[int, str]:
    """run() around a child that exits with `child_exit` when it gets USR1."""
    child = _stub(tmp_path / "child", f"trap 'exit {child_exit}' USR1\n"
                  "while :; do sleep 0.1; done\n")
    proc = subprocess.Popen(["bash", "-c", f"source scripts/slurm/common.sh; run {child}"],
                            cwd=REPO, env=_env(tmp_path), stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGUSR1)        # what --signal=B:USR1@180 sends the batch shell
    _, err = proc.communicate(timeout=30)
    log = tmp_path / "scontrol.log"
    return proc.returncode, log.read_text() if log.exists() else ""


def test_warning_signal_requeues_after_a_checkpoint(tmp_path):
    rc, calls = _run_child(tmp_path, 75)            # checkpointed, wants to resume
    assert rc == 0 and calls.strip() == "requeue 42"


def test_a_run_that_finished_anyway_is_not_requeued(tmp_path):
    rc, calls = _run_child(tmp_path, 0)
    assert rc == 0 and calls == ""
    rc, calls = _run_child(tmp_path, 3)             # a crash keeps its exit code
    assert rc == 3 and calls == ""
