"""`rag slurm` (submit, status): the batch scripts of rag/data/slurm/ (scripts/slurm/ in a checkout) as jobs."""
from __future__ import annotations

import click

from .common import echo_json


@click.group()
def slurm():
    """Run ingest, fine-tuning and evaluation as Slurm jobs (the batch scripts shipped in rag/data/slurm/)."""


@slurm.command("submit")
@click.argument("kind", type=click.Choice(["finetune", "finetune-multi", "ingest", "eval"]))
@click.option("--partition", help="Slurm partition.")
@click.option("--gpus", type=click.IntRange(0), default=0, show_default=True,
              help="GPUs per node (finetune-multi) or per job.")
@click.option("--gpu-type", help="GPU type as the cluster names it (--gpus tesla:1).")
@click.option("--time", "time_limit", help="Time limit, e.g. 04:00:00.")
@click.option("--nodes", type=click.IntRange(1), help="Nodes (finetune-multi).")
@click.option("--ntasks", type=click.IntRange(1), help="Tasks, one torchrun each "
              "(finetune-multi; default one per node).")
@click.option("--cpus", type=click.IntRange(1), help="CPUs per task.")
@click.option("--mem", help="Memory per node, e.g. 32G.")
@click.option("--job-name", help="Job name (default rag-<kind>).")
@click.option("--container", help="Apptainer/Singularity image to run in (default: plain "
              "Python, the current interpreter).")
@click.option("--config", "ft_config", help="finetune: the training config file.")
@click.option("--out", help="finetune: adapter directory; eval: output directory.")
@click.option("--index", "index_dir", help="ingest/eval: index directory.")
@click.option("--questions", help="eval: question set (default corpus/questions.jsonl).")
@click.option("--shards", type=click.IntRange(1), default=2, show_default=True,
              help="eval: array tasks; a merge job runs after them.")
@click.option("--args", "extra", default="", help="Extra arguments for the rag command, "
              "e.g. --args '--set lr=1e-4' or --args '--retrieval-only'.")
@click.option("--paths", default="", help="ingest: documents to index.")
@click.option("--dry-run", is_flag=True, help="Show the rendered script(s); submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the submitted jobs as JSON.")
def slurm_submit(kind, partition, gpus, gpu_type, time_limit, nodes, ntasks, cpus, mem,
                 job_name, container, ft_config, out, index_dir, questions, shards, extra,
                 paths, dry_run, as_json):
    """Render the batch script for KIND with these options and submit it with sbatch;
    print the job id and its log. Settings become RAG_* exports in the script."""
    from ..slurm import SubmitOptions, job_env, submit

    env = job_env(kind, ft_config=ft_config, out=out, index_dir=index_dir,
                  questions=questions, shards=shards, extra=extra, paths=paths)
    opts = SubmitOptions(partition=partition, gpus=gpus, gpu_type=gpu_type, time=time_limit,
                         nodes=nodes, ntasks=ntasks, cpus=cpus, mem=mem, job_name=job_name,
                         container=container, shards=shards, env=env)
    jobs = submit(kind, opts, dry_run=dry_run)
    if as_json:
        echo_json(jobs)
        return
    for job in jobs:
        if dry_run:
            click.echo(click.style(f"# --- {job['script']} ---", dim=True))
            click.echo(job["rendered"])
        else:
            click.echo(f"submitted {job['script']} as job {job['job_id']}; log: {job['log']}")


@slurm.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def slurm_status(as_json):
    """Show this project's jobs (names starting with rag-) in the queue."""
    from ..slurm import status

    rows = status()
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no rag jobs in the queue")
    else:
        for r in rows:
            click.echo(f"{r['job_id']:>10}  {r['name']:<20} {r['state']:<10} {r['elapsed']:>10} "
                       f"/ {r['limit']:<10} {r['reason']}")


