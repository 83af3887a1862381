"""Peak memory of the inference service with each model loaded in its worker processes.

Usage:
    python bench/bench_service_memory.py                  # cnn and fast, 400 synthetic 1920x1080 JPEGs
    python bench/bench_service_memory.py --models cnn --n 1000

For each model, `curation serve` starts in a fresh process (CURATION_MODEL=<model>, file:// URLs allowed, one worker
process per core), takes one job of --n images with 256-px thumbnails, and is stopped once the job has Completed.
Printed: the peak RSS (VmHWM) of the service process, of each worker process (the model is loaded in each), and their
sum; with the job's wall time and images/s. Synthetic images come from support.image_cache (made once). Writes
bench/results/service-memory-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import support

KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(model: str, images: list[Path]) -> dict[str, float]:
    port = _free_port()
    env = dict(os.environ, CURATION_MODEL=model, CURATION_SERVICE_API_KEYS=KEY, CURATION_ALLOW_FILE_URLS="true")
    proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # synchronise on uvicorn's start-up line, not on a sleep
            if "Uvicorn running" in line:
                break
        items = [{"image_id": f"{i:05d}", "url": p.as_uri(), "size": p.stat().st_size} for i, p in enumerate(images)]
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as http:
            started = time.perf_counter()
            job = http.post("/v1/jobs", json={"items": items, "thumbnail_side": 256}).raise_for_status().json()
            status = job
            while status["status"] == "Processing":
                status = http.get(f"/v1/jobs/{job['job_id']}", params={"wait_s": 30}).raise_for_status().json()
            seconds = time.perf_counter() - started
        workers = [support.status_kb(c, "VmHWM") for c in support.descendants(proc.pid)]
        service = support.status_kb(proc.pid, "VmHWM")
        return {"seconds": seconds, "done": status["done"], "failed": status["failed"], "service": service / 1024,
                "workers": [w / 1024 for w in workers], "total": (service + sum(workers)) / 1024}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["cnn", "fast"])
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    images = support.image_cache(args.n)
    print(f"{'model':<6} {'images':>6} {'failed':>6} {'s':>6} {'img/s':>6} {'service MB':>10} "
          f"{'processes (peak MB each)':<40} {'sum MB':>7}")
    runs = {}
    for model in args.models:
        r = runs[model] = measure(model, images)
        each = ", ".join(f"{w:.0f}" for w in r["workers"])
        print(f"{model:<6} {r['done']:>6} {r['failed']:>6} {r['seconds']:6.1f} {r['done'] / r['seconds']:6.1f} "
              f"{r['service']:10.0f} {each:<40} {r['total']:7.0f}", flush=True)
    support.write_result("service-memory", {"n": args.n, **support.machine(), "runs": runs})


if __name__ == "__main__":
    main()
