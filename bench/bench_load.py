"""Load on ONE inference service: concurrent jobs of tiny images, status polled from many threads while it is busy.

Usage:
    python bench/bench_load.py                        # 8 jobs x 1,000 images, 8 polling threads
    python bench/bench_load.py --jobs 2 --images 200  # a quick look

What runs: the real service app (curation.inference.service.server.start_in_thread, the configured default `cpu` backend,
file:// URLs allowed as for the embedded service) on a loopback port in THIS process, and plain HTTP clients:
  1. N tiny distinct JPEGs per job are generated under a temporary folder (removed at the end).
  2. The jobs are submitted at once, one thread per job (InferenceClient.submit_job).
  3. While any job runs, P threads poll GET /v1/jobs/{id} (thread k polls job k mod jobs) every --poll-interval s,
     one raw request each (no retries), timing each call; a call that fails or is not 200 is counted as an error.
  4. When every job is Completed, each job's results are read in pages (InferenceClient.iter_results): every
     submitted image must be there exactly once, none extra.
Reported: the accounting per job, images/s, the process RSS (VmRSS from /proc/self/status) before the jobs and
after, its peak (VmHWM), and p50/p95/max status latency while busy (target: p95 < 200 ms). The pollers share the
service's process (and its GIL), as the embedded service shares the SDK's: the latency includes that contention.
Everything is bounded (--deadline) and on loopback. Writes bench/results/load-<jobs>x<images>-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import secrets
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import support
from PIL import Image
from pydantic import SecretStr

from curation.inference.client import InferenceClient
from curation.inference.service.server import start_in_thread
from curation.settings import Settings

TARGET_P95_MS = 200.0


def tiny_jpegs(folder: Path, jobs: int, per_job: int, side: tuple[int, int]) -> list[list[Path]]:
    """Distinct tiny JPEGs: a random colour plus noise per image."""
    rng = np.random.default_rng(7)
    w, h = side
    out: list[list[Path]] = []
    for j in range(jobs):
        d = folder / f"job{j}"
        d.mkdir(parents=True)
        paths = []
        for i in range(per_job):
            pixels = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
            p = d / f"img_{i:05d}.jpg"
            p.write_bytes(buf.getvalue())
            paths.append(p)
        out.append(paths)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--images", type=int, default=1000, help="images per job")
    ap.add_argument("--pollers", type=int, default=8)
    ap.add_argument("--poll-interval", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="service inference threads")
    ap.add_argument("--side", type=int, nargs=2, default=(64, 48), metavar=("W", "H"))
    ap.add_argument("--deadline", type=float, default=900.0, help="give up after this many seconds")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        t0 = time.perf_counter()
        paths = tiny_jpegs(tmp / "images", args.jobs, args.images, tuple(args.side))
        gen_s = time.perf_counter() - t0
        key = SecretStr(secrets.token_urlsafe(24))
        service_settings = Settings(
            allow_file_urls=True, allow_private_hosts=True, service_workers=args.workers, data_root=tmp / "data"
        )
        running = start_in_thread(service_settings, key)
        client_settings = Settings(request_timeout_s=30, transient_budget_s=30)
        try:
            with InferenceClient(running.url, key, client_settings) as c:  # warm-up: routes, model, first batch
                c.model_info()
            rss_before = support.status_kb("self", "VmRSS")
            result = run_load(args, running.url, key, client_settings, paths)
            rss_after = support.status_kb("self", "VmRSS")
            hwm = support.status_kb("self", "VmHWM")
        finally:
            running.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lat = result.pop("latencies_ms")
    summary = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "generate_images_s": round(gen_s, 2),
        **result,
        "status_latency_ms": {
            "calls": len(lat),
            "p50": round(percentile(lat, 50), 2),
            "p95": round(percentile(lat, 95), 2),
            "max": round(max(lat), 2) if lat else None,
            "target_p95": TARGET_P95_MS,
            "p95_ok": bool(lat) and percentile(lat, 95) < TARGET_P95_MS,
        },
        "rss_mib": {
            "before": round(rss_before / 1024, 1),
            "after": round(rss_after / 1024, 1),
            "growth": round((rss_after - rss_before) / 1024, 1),
            "peak_vmhwm": round(hwm / 1024, 1),
        },
    }
    print_table(summary)
    support.write_result(f"load-{args.jobs}x{args.images}", summary)
    if not summary["all_accounted"]:
        sys.exit(1)


def run_load(args, url: str, key: SecretStr, settings: Settings, paths: list[list[Path]]) -> dict:
    jobs = len(paths)
    job_ids: list[str | None] = [None] * jobs
    submit_errors: list[str] = []
    expected = [{f"j{j}-{i:05d}" for i in range(len(p))} for j, p in enumerate(paths)]

    def submit(j: int) -> None:
        items = [{"image_id": f"j{j}-{i:05d}", "url": p.as_uri(), "size": p.stat().st_size} for i, p in enumerate(paths[j])]
        try:
            with InferenceClient(url, key, settings) as c:
                job_ids[j] = c.submit_job(items, idempotency_key=f"bench-load-{j}")
        except Exception as exc:  # reported, and the job counts as unaccounted
            submit_errors.append(f"job {j}: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    submitters = [threading.Thread(target=submit, args=(j,)) for j in range(jobs)]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join(timeout=args.deadline)
    submit_s = time.perf_counter() - start

    busy = threading.Event()
    busy.set()
    lock = threading.Lock()
    latencies: list[float] = []
    poll_errors: list[str] = []
    last: dict[int, dict] = {}
    deadline = start + args.deadline

    def poll(k: int) -> None:
        j = k % jobs
        if job_ids[j] is None:
            return
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key.get_secret_value()}"}, timeout=10) as h:
            while busy.is_set() and time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    r = h.get(f"/v1/jobs/{job_ids[j]}")
                    ms = (time.perf_counter() - t) * 1000
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ms, ok, r = (time.perf_counter() - t) * 1000, False, exc
                with lock:
                    if ok:
                        latencies.append(ms)
                        last[j] = r.json()
                    else:
                        poll_errors.append(str(getattr(r, "status_code", r)))
                time.sleep(args.poll_interval)

    pollers = [threading.Thread(target=poll, args=(k,), daemon=True) for k in range(args.pollers)]
    for t in pollers:
        t.start()
    with InferenceClient(url, key, settings) as c:
        while time.perf_counter() < deadline:
            statuses = [c.job_status(i) for i in job_ids if i is not None]
            if all(s.finished for s in statuses):
                break
            time.sleep(0.25)
    busy_s = time.perf_counter() - start
    busy.clear()
    for t in pollers:
        t.join(timeout=15)

    per_job = []
    with InferenceClient(url, key, settings) as c:
        for j, job_id in enumerate(job_ids):
            if job_id is None:
                per_job.append({"job": j, "submitted": len(expected[j]), "status": "not submitted"})
                continue
            status = c.job_status(job_id)
            seen: list[str] = []
            errors = 0
            if status.status == "Completed":
                for page in c.iter_results(job_id):
                    seen += [r["image_id"] for r in page]
                    errors += sum(r["error"] is not None for r in page)
            per_job.append(
                {
                    "job": j,
                    "status": status.status,
                    "submitted": len(expected[j]),
                    "results": len(seen),
                    "unique": len(set(seen)),
                    "missing": len(expected[j] - set(seen)),
                    "extra": len(set(seen) - expected[j]),
                    "errors": errors,
                    "accounted": status.status == "Completed" and len(seen) == len(set(seen)) and set(seen) == expected[j],
                }
            )
    total = sum(len(e) for e in expected)
    return {
        "images_total": total,
        "submit_s": round(submit_s, 2),
        "busy_s": round(busy_s, 2),
        "images_per_s": round(total / busy_s, 1),
        "jobs": per_job,
        "all_accounted": not submit_errors and all(p.get("accounted") for p in per_job),
        "submit_errors": submit_errors,
        "poll_errors": len(poll_errors),
        "poll_error_samples": poll_errors[:5],
        "latencies_ms": latencies,
    }


def print_table(s: dict) -> None:
    support.print_table(
        f"load: {len(s['jobs'])} jobs x {s['config']['images']} images, {s['config']['pollers']} pollers, "
        f"{s['config']['workers']} service workers, {s['machine']['cpus']} CPUs",
        ["job", "status", "submitted", "results", "unique", "missing", "extra", "errors", "ok"],
        [[str(p["job"]), p["status"], *(str(p.get(k, "-")) for k in ("submitted", "results", "unique", "missing",
                                                                       "extra", "errors")),
          str(p.get("accounted", False))] for p in s["jobs"]])
    lat, rss = s["status_latency_ms"], s["rss_mib"]
    rows = [
        ("every image accounted for", s["all_accounted"]),
        ("images / busy time", f"{s['images_total']} / {s['busy_s']} s = {s['images_per_s']} img/s"),
        ("submit (all jobs)", f"{s['submit_s']} s"),
        ("status calls while busy", f"{lat['calls']} ({s['poll_errors']} errors)"),
        ("status latency p50 / p95 / max", f"{lat['p50']} / {lat['p95']} / {lat['max']} ms"),
        (f"p95 < {TARGET_P95_MS:.0f} ms", lat["p95_ok"]),
        ("RSS before / after (growth)", f"{rss['before']} / {rss['after']} MiB ({rss['growth']:+} MiB)"),
        ("peak RSS (VmHWM)", f"{rss['peak_vmhwm']} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
