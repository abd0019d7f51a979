"""The batch scripts against a real Slurm (scripts/slurm/cluster.sh brings one up; CI
does). Every job runs in the plain-Python mode with the tiny models."""
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CORPUS

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(shutil.which("sbatch") is None, reason="no sbatch: Slurm is not "
                       "installed (scripts/slurm/cluster.sh up brings up a local cluster)"),
    pytest.mark.slurm,
]


@pytest.fixture(scope="module", autouse=True)
def cluster_is_up():
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.skip(f"no Slurm controller answers: {proc.stderr.strip()}")


def rag(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rag", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def submit(kind, *args) -> list[dict]:
    return json.loads(rag("slurm", "submit", kind, *args, "--json").stdout)


def state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True).stdout
    states = [part.split("=", 1)[1] for line in out.splitlines() for part in line.split()
              if part.startswith("JobState=")]
    if not states:
        return "UNKNOWN"
    active = [s for s in states if s in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING",
                                         "REQUEUED", "SUSPENDED")]
    return active[0] if active else ("COMPLETED" if all(s == "COMPLETED" for s in states)
                                     else ",".join(sorted(set(states))))


def wait(job_id: str, timeout: float = 600) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = state(job_id)
        if s not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED"):
            return s
        time.sleep(0.5)
    subprocess.run(["scancel", job_id])
    pytest.fail(f"job {job_id} still {state(job_id)} after {timeout}s")


def log(job: dict, ext="out") -> str:
    return (REPO / job["log"]).with_suffix(f".{ext}").read_text(errors="replace")


@pytest.fixture
def train_config(tmp_path, tiny_generator):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"質問{i}は？", "output": f"回答{i}です"},
                                         ensure_ascii=False) for i in range(16)), "utf-8")
    cfg = tmp_path / "ft.toml"
    cfg.write_text(f'model = "{tiny_generator}"\ndata = ["{data}"]\nmicro_batch = 2\n'
                   'grad_accum = 1\nlr = 1e-3\nwarmup_steps = 1\neval_fraction = 0.0\n'
                   'lora_dropout = 0.0\nlog_every = 5\nsave_every = 5\n', "utf-8")
    return cfg


def test_ingest_job_builds_an_index(tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    (job,) = submit("ingest", "--paths", CORPUS, "--index", index,
                    "--args", f"--embedder {tiny_embedder}")
    assert wait(job["job_id"]) == "COMPLETED", log(job, "err")
    from ingest import store
    assert len(store.load_index(index).passages) > 80
    assert "rag-slurm: job" in log(job, "err")


def test_finetune_job_trains_an_adapter(tmp_path, train_config):
    out = tmp_path / "adapter"
    (job,) = submit("finetune", "--config", train_config, "--out", out,
                    "--args", "--max-steps 4")
    assert wait(job["job_id"]) == "COMPLETED", log(job, "err")
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "run.json").read_text())["steps"] == 4


def test_two_task_distributed_training_through_srun_and_torchrun(tmp_path, train_config):
    out = tmp_path / "ddp"
    (job,) = submit("finetune-multi", "--ntasks", 2, "--cpus", 1, "--config", train_config,
                    "--out", out, "--args", "--max-steps 3")
    assert wait(job["job_id"]) == "COMPLETED", log(job, "err")
    card = json.loads((out / "run.json").read_text())
    assert card["world_size"] == 2 and card["steps"] == 3


def test_eval_array_and_merge_equal_a_single_run(tmp_path, corpus_index):
    out = tmp_path / "eval"
    array, merge = submit("eval", "--shards", 2, "--index", corpus_index, "--out", out,
                          "--questions", CORPUS / "questions.jsonl", "--args", "--retrieval-only")
    assert wait(merge["job_id"]) == "COMPLETED", log(merge, "err")
    assert state(array["job_id"]) == "COMPLETED"
    single = tmp_path / "single"
    rag("eval", "run", CORPUS / "questions.jsonl", "--index", corpus_index, "--out", single,
        "--retrieval-only")
    speed = re.compile(r"## Speed\n.*?(?=\n## )", re.S)     # timings differ run to run
    assert (speed.sub("", (out / "merged" / "report.md").read_text())
            == speed.sub("", (single / "report.md").read_text()))


def test_cancelled_training_resumes_from_its_checkpoint(tmp_path, train_config):
    out = tmp_path / "adapter"
    args = ("--config", train_config, "--out", out, "--args", "--max-steps 400")
    (job,) = submit("finetune", *args)
    deadline = time.time() + 300
    while not (out / "checkpoint" / "state.pt").is_file():
        assert time.time() < deadline and state(job["job_id"]) in ("PENDING", "RUNNING"), \
            log(job, "err")
        time.sleep(0.2)
    time.sleep(1.0)
    subprocess.run(["scancel", job["job_id"]], check=True)
    assert wait(job["job_id"]) == "CANCELLED"
    assert "stopped by SIGTERM" in log(job, "err")
    import torch
    saved = torch.load(out / "checkpoint" / "state.pt", weights_only=False)["step"]
    assert 0 < saved < 400
    (again,) = submit("finetune", *args)
    assert wait(again["job_id"]) == "COMPLETED", log(again, "err")
    assert f"resuming at step {saved} of 400" in log(again, "err")
    assert json.loads((out / "run.json").read_text())["steps"] == 400


def test_gpu_requests_reach_the_job():
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout
    if "gpu" not in gres:
        pytest.skip("the cluster advertises no GPUs (cluster.sh with SLURM_FAKE_GPUS=2)")
    (job,) = submit("ingest", "--gpus", 1, "--paths", "/nonexistent-on-purpose")
    wait(job["job_id"])
    assert "CUDA_VISIBLE_DEVICES=0" in log(job, "err")


def test_dry_run_and_status():
    r = rag("slurm", "submit", "finetune", "--gpus", 1, "--gpu-type", "tesla", "--partition",
            "gpu", "--time", "02:00:00", "--dry-run")
    assert "#SBATCH --gpus=tesla:1" in r.stdout and "#SBATCH --partition=gpu" in r.stdout
    assert "#SBATCH --requeue" in r.stdout and "--signal=B:USR1@" in r.stdout
    assert rag("slurm", "status").returncode == 0
