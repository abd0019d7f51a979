#!/usr/bin/env python3
"""What the batch scripts add to a job: time from `rag slurm submit` to the start of the
batch script, and to the Python entry point of `rag`, over several trivial jobs.

    scripts/slurm/cluster.sh up        # or a real cluster
    python scripts/bench/bench_slurm_overhead.py --jobs 5 [--json]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    to_script, to_python = [], []
    for _ in range(args.jobs):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "rag", "slurm", "submit", "ingest",
                              "--args", "--help", "--json"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
        job = json.loads(out)[0]
        err = (REPO / job["log"]).with_suffix(".err")
        while subprocess.run(["squeue", "-h", "-j", job["job_id"]], capture_output=True,
                             text=True).stdout.strip():
            time.sleep(0.1)
        text = err.read_text()
        started = float(re.search(r"started (\d+\.\d+)", text).group(1))
        entry = float(re.search(r"python entry (\d+\.\d+)", text).group(1))
        to_script.append(started - t0)
        to_python.append(entry - t0)
    result = {"jobs": args.jobs,
              "submit_to_script_s_median": round(statistics.median(to_script), 2),
              "submit_to_python_entry_s_median": round(statistics.median(to_python), 2),
              "script_to_python_entry_s_median": round(
                  statistics.median(p - s for p, s in zip(to_python, to_script)), 3)}
    print(json.dumps(result, indent=1 if args.json else None))


if __name__ == "__main__":
    main()
