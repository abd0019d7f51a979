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


def test_vllm_serve_script_merges_the_adapter_then_serves_it(tmp_path, tiny_generator,
                                                              tiny_adapter):
    """scripts/slurm/vllm-serve.sbatch with a stub vllm: the adapter is merged once (vLLM's
    GPT-NeoX takes no LoRA), the merged model is served under the name the client asks
    for, and the log says how to point [generate] base_url at it."""
    vllm = _stub(tmp_path / "vllm", f'echo "$@" >> {tmp_path}/vllm.log\n')
    merged = tmp_path / "merged"
    env = _env(tmp_path, RAG_VLLM=str(vllm), RAG_VLLM_MODEL=str(tiny_generator),
               RAG_VLLM_ADAPTER=str(tiny_adapter), RAG_VLLM_MERGED=str(merged),
               RAG_VLLM_PORT="8123", RAG_PYTHON=sys.executable, PYTHONPATH=str(REPO),
               RAG_OPENAI_API_KEY="k")
    script = ["bash", "scripts/slurm/vllm-serve.sbatch"]
    proc = subprocess.run(script, cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (merged / "config.json").is_file() and "merging" in proc.stderr
    assert (tmp_path / "vllm.log").read_text().split() == [
        "serve", str(merged), "--host", "0.0.0.0", "--port", "8123", "--max-model-len",
        "2048", "--served-model-name", "rag"]
    assert 'backend = "openai"' in proc.stderr and ":8123/v1" in proc.stderr
    assert 'model = "rag"' in proc.stderr and f'tokenizer = "{tiny_generator}"' in proc.stderr
    again = subprocess.run(script, cwd=REPO, capture_output=True, text=True,
                           env={**env, "RAG_VLLM_LORA": "lora"}, timeout=120)
    assert again.returncode == 0 and "merging" not in again.stderr
    assert (tmp_path / "vllm.log").read_text().splitlines()[-1].split() == [
        "serve", str(tiny_generator), "--host", "0.0.0.0", "--port", "8123",
        "--max-model-len", "2048", "--enable-lora", "--lora-modules", f"rag={tiny_adapter}",
        "--max-lora-rank", "64"]
    bad = subprocess.run(script, cwd=REPO, capture_output=True, text=True,
                         env={**env, "RAG_VLLM_ADAPTER": str(tmp_path / "nope")}, timeout=60)
    assert bad.returncode == 2 and "not found" in bad.stderr
