"""How many Prefect servers one `edgedistill run` starts, and what they cost.

    python benchmarks/prefect_servers.py recipes/digits.yaml --out runs/servers [--dask local]

Runs the command and samples its process tree twice a second: every Prefect (uvicorn) server it or its
workers start, how many at once, their CPU seconds, and whether any is still running after the run ended.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dask", help="run the shards on Dask ('local' or a scheduler address)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "flows.cli", "run", args.recipe, "--out", args.out,
               *(["--dask", args.dask] if args.dask else [])]
    started = time.perf_counter()
    run = psutil.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                       env=os.environ | {"PREFECT_HOME": str(Path(args.out).resolve() / "prefect-home")})
    servers: dict[int, psutil.Process] = {}
    cpu: dict[int, float] = {}
    most = 0
    while run.poll() is None:
        try:
            now = [p for p in run.children(recursive=True) if "uvicorn" in " ".join(p.cmdline())]
        except psutil.Error:
            now = []
        most = max(most, len(now))
        for server in now:
            servers.setdefault(server.pid, server)
            try:
                cpu[server.pid] = sum(server.cpu_times()[:2])
            except psutil.Error:
                pass
        time.sleep(0.5)
    wall = time.perf_counter() - started
    left = [pid for pid, server in servers.items() if server.is_running()]
    rows = [("run", f"{wall:.1f} s, exit code {run.returncode}"),
            ("Prefect servers started", len(servers)), ("at once, at most", most),
            ("their CPU time", f"{sum(cpu.values()):.1f} s"), ("left running after the run", len(left))]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
