"""Curation throughput from Azure Blob Storage, emulated by Azurite: the Prefect flow and the plain calls.

Usage:
    python bench/bench_azure.py                     # N=500, both modes once
    python bench/bench_azure.py --n 10000 --modes prefect

Azurite starts as tests/azurite.py starts it for the tests (node_modules/.bin/azurite-blob from the npm lockfile, a
free loopback port, data in a temporary folder); without it the script says so and exits 0. N synthetic 1920x1080
JPEGs are uploaded (untimed), then each mode curates the container with one embedded service after an untimed
warm-up from a local folder; the service reads every blob once through its SAS URL. Per run: wall, images/s, CPU
of this process and of its children (Azurite's node process, the service's workers, Prefect's server), peak RSS.
Prints a table; writes bench/results/azure-<N>-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import support

MODES = {"prefect": support.curate_prefect, "plain": support.curate_plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="images (default 500)")
    ap.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES), help="default: both")
    ap.add_argument("--poll-interval", type=float, default=None, help="override CURATION_POLL_INTERVAL_S")
    ap.add_argument("--cache", type=Path, default=support.CACHE, help="where the synthetic images are kept")
    ap.add_argument("--tmp", type=Path, default=support.RESULTS, help="parent of the temporary data root and Azurite's")
    args = ap.parse_args()
    from tests.azurite import AZURITE_BLOB_BIN, run_azurite

    if not AZURITE_BLOB_BIN.exists():
        print(f"bench_azure: {AZURITE_BLOB_BIN} is missing (`make install-test` runs npm ci); skipping.")
        return
    n = args.n
    args.tmp.mkdir(parents=True, exist_ok=True)
    paths = support.image_cache(max(n, support.WARMUP_IMAGES), args.cache)
    warm = support.dataset_folder(paths[: support.WARMUP_IMAGES], "warm", args.cache)
    work = Path(tempfile.mkdtemp(prefix="bench-azure-", dir=args.tmp))
    support.prepare_prefect(work / "prefect-home")
    res: dict = {"n": n, **support.machine(), "runs": {}}
    try:
        from azure.storage.blob import BlobServiceClient
        from pydantic import SecretStr

        from curation.inference.service.server import service_for
        from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig

        with run_azurite(work / "azurite") as az, service_for(
            support.bench_settings(work / "data", args.poll_interval)
        ) as settings:
            container = BlobServiceClient.from_connection_string(az.connection_string).create_container("bench")
            print(f"uploading {n} images to Azurite (untimed) ...", flush=True)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda p: container.upload_blob(p.name, p.read_bytes(), overwrite=True), paths[:n]))
            res["upload_s"] = time.perf_counter() - t0
            config = AzureStorageConfig(account_name=az.account_name, container_name="bench",
                                        account_key=SecretStr(az.account_key), account_url=az.blob_endpoint)
            print("warm-up (untimed): Prefect's temporary server, the service's workers, imports and JIT ...", flush=True)
            support.warm_prefect()
            for mode in args.modes:
                MODES[mode](settings, LocalStorageConfig(path=warm), f"warm-up-{mode}")
            support.warm_layout()
            for i, mode in enumerate(args.modes):
                print(f"[{i + 1}/{len(args.modes)}] {n} images from Azurite, {mode} ...", flush=True)
                with support.Meter() as m:
                    dataset_id = MODES[mode](settings, config, f"azurite-{mode}-{n}")
                res["runs"][mode] = {**m.as_dict(), **support.check_done(settings, dataset_id, n),
                                     "images_per_s": n / m.wall}
                print(f"      {m.wall:.1f} s, {n / m.wall:.1f} img/s, load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [[f"azurite {mode}", f"{r['seconds']:.1f}", f"{r['images_per_s']:.0f}", f"{r['cpu_s']:.1f}",
             f"{r['children_cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}"] for mode, r in res["runs"].items()]
    support.print_table(f"curation from Azurite, N={n} synthetic 1920x1080 JPEGs, {os.cpu_count()} cores "
                        f"(upload {res['upload_s']:.0f} s, untimed)",
                        ["run", "seconds", "img/s", "CPU s", "children CPU s", "peak RSS MB"], rows)
    support.write_result(f"azure-{n}", res)


if __name__ == "__main__":
    main()
