"""`rag slurm submit|status`: render the batch scripts (package data, rag/data/slurm/;
scripts/slurm/ in a checkout links there) with a user's options, show them, and submit
them with sbatch. Jobs run in the directory `rag slurm` is called from (RAG_HOME), where
rag.toml, the corpus and the indexes are, and write their logs to its logs/."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ingest.errors import RagError

SCRIPTS = {"finetune": ["finetune.sbatch"], "finetune-multi": ["finetune-multi.sbatch"],
           "ingest": ["ingest.sbatch"], "eval": ["eval-array.sbatch", "eval-merge.sbatch"]}


class SlurmError(RagError):
    pass


@dataclass
class SubmitOptions:
    partition: str | None = None
    gpus: int = 0
    gpu_type: str | None = None          # e.g. tesla, as in --gpus tesla:1
    time: str | None = None
    nodes: int | None = None
    ntasks: int | None = None
    cpus: int | None = None
    mem: str | None = None
    job_name: str | None = None
    container: str | None = None         # .sif image; None = plain Python
    python: str = field(default_factory=lambda: sys.executable)
    shards: int = 2                      # eval array size
    env: dict[str, str] = field(default_factory=dict)   # RAG_* settings of the script


def job_env(kind: str, *, ft_config: str | None = None, out: str | None = None,
            index_dir: str | None = None, questions: str | None = None, shards: int = 2,
            extra: str = "", paths: str = "") -> dict[str, str]:
    """The RAG_* variables each batch script reads (documented at its top)."""
    def given(*pairs):
        return {k: v for k, v in pairs if v}

    if kind.startswith("finetune"):
        return given(("RAG_FT_CONFIG", ft_config), ("RAG_FT_OUT", out), ("RAG_FT_ARGS", extra))
    if kind == "ingest":
        return given(("RAG_INGEST_PATHS", paths), ("RAG_INDEX", index_dir),
                     ("RAG_INGEST_ARGS", extra))
    args = extra + (f" --index {index_dir}" if index_dir else "")
    return {"RAG_EVAL_SHARDS": str(shards), **given(
        ("RAG_EVAL_QUESTIONS", questions),
        ("RAG_EVAL_OUT", out or f"eval/{time.strftime('%Y%m%d-%H%M%S')}"),
        ("RAG_EVAL_ARGS", args.strip()))}


def scripts_dir() -> Path:
    """The batch scripts, shipped with the package."""
    d = Path(str(resources.files("rag.data") / "slurm"))
    if not (d / "common.sh").is_file():
        raise SlurmError(f"{d} has no batch scripts: reinstall gakusoku-rag")
    return d


def home() -> Path:
    """Where jobs run: the directory `rag slurm` was called from."""
    return Path.cwd()


def render(script: str, opts: SubmitOptions, extra: list[str] = ()) -> str:
    """The script with the options as #SBATCH lines and the settings as exports."""
    text = (scripts_dir() / script).read_text(encoding="utf-8")
    flags = [("job-name", opts.job_name), ("partition", opts.partition), ("time", opts.time),
             ("nodes", opts.nodes), ("ntasks", opts.ntasks),
             # tasks spread over the nodes (one torchrun each)
             ("ntasks-per-node", -(-opts.ntasks // (opts.nodes or 1)) if opts.ntasks else None),
             ("cpus-per-task", opts.cpus), ("mem", opts.mem)]
    lines = [f"--{name}={value}" for name, value in flags if value]
    if opts.gpus:
        kind = f"{opts.gpu_type}:" if opts.gpu_type else ""
        lines.append(f"--gpus-per-node={kind}{opts.gpus}" if opts.nodes and opts.nodes > 1
                     else f"--gpus={kind}{opts.gpus}")
    lines += extra
    header = "".join(f"#SBATCH {x}\n" for x in lines)
    env = {"RAG_HOME": str(home()), "RAG_SCRIPTS": str(scripts_dir()), "RAG_PYTHON": opts.python,
           **opts.env}
    if opts.container:
        env["RAG_CONTAINER"] = opts.container
    exports = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in env.items())
    # After the script's own #SBATCH lines (later ones win), before its first command.
    body = text.splitlines(keepends=True)
    last = max(i for i, ln in enumerate(body) if ln.startswith("#SBATCH"))
    return "".join(body[:last + 1]) + header + exports + "".join(body[last + 1:])


def submit(kind: str, opts: SubmitOptions, dry_run: bool = False) -> list[dict]:
    """Render and submit; for eval an array job then the merge job depending on it."""
    if kind not in SCRIPTS:
        raise SlurmError(f"unknown job kind {kind!r} ({', '.join(SCRIPTS)})")
    rendered_dir = home() / "logs" / "rendered"
    jobs = []
    previous = None
    for n, script in enumerate(SCRIPTS[kind]):
        extra = []
        if kind == "eval" and n == 0:
            extra.append(f"--array=0-{opts.shards - 1}")
        if previous:
            extra.append(f"--dependency=afterok:{previous}")
        text = render(script, opts if n == 0 else _without_gpus(opts), extra)
        names = re.findall(r"^#SBATCH --job-name=(\S+)", text, re.M)
        name = names[-1] if names else script           # the last one is the one sbatch uses
        if dry_run:
            jobs.append({"script": script, "rendered": text, "job_id": None})
            continue
        rendered_dir.mkdir(parents=True, exist_ok=True)
        (home() / "logs").mkdir(exist_ok=True)      # sbatch cannot create its log directory
        path = rendered_dir / f"{script.rsplit('.', 1)[0]}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.sbatch"
        path.write_text(text, encoding="utf-8")
        try:
            proc = subprocess.run(["sbatch", "--parsable", str(path)], cwd=home(),
                                  capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise SlurmError("sbatch not found: is this a Slurm login node?") from None
        if proc.returncode != 0:
            raise SlurmError(f"sbatch {path.name} failed: {proc.stderr.strip()}")
        job_id = proc.stdout.strip().split(";")[0]
        log = (f"logs/{name}-{job_id}_<task>.out" if kind == "eval" and n == 0
               else f"logs/{name}-{job_id}.out")
        jobs.append({"script": script, "rendered": str(path), "job_id": job_id, "log": log})
        previous = job_id
    return jobs


def _without_gpus(opts: SubmitOptions) -> SubmitOptions:
    from dataclasses import replace
    return replace(opts, gpus=0, nodes=None, ntasks=None)


def status() -> list[dict]:
    """This user's jobs of this project (names starting with rag-) in the queue."""
    try:
        proc = subprocess.run(["squeue", "--me", "-h", "-o", "%i|%j|%T|%M|%l|%R"],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise SlurmError("squeue not found: is this a Slurm login node?") from None
    if proc.returncode != 0:
        raise SlurmError(proc.stderr.strip())
    keys = ("job_id", "name", "state", "elapsed", "limit", "reason")
    rows = [dict(zip(keys, ln.split("|"))) for ln in proc.stdout.splitlines() if ln.strip()]
    return [r for r in rows if r["name"].startswith("rag-")]
