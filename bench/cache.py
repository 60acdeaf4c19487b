"""The incremental fit: a cached re-fit after one new file, against a full fit.

Builds a copy of a dataset out of hard links (no extra disk) holding all files but
the last, fills a cache by fitting it, adds the last file, and times, each
``--repeat`` times:

* the full fit of all files without cache, and
* the cached re-fit (all cached files reused, the new one read),

both in one process on one embedded cluster (the fit itself), and as whole
``zscore fit`` processes (what an Airflow task pays).  It checks the cached
statistics are bit-identical to the full fit's, and prints one JSON document.

    python bench/cache.py bench/data/M --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _link_tree(src: str, dest: str, skip: str | None) -> list[str]:
    files = []
    for dirpath, _, names in os.walk(src):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(dirpath, name), src)
            if name.startswith((".", "_")) or rel == skip:
                continue
            files.append(rel)
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            os.link(os.path.join(src, rel), os.path.join(dest, rel))
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    import pipeline

    root = os.path.abspath(args.dataset)
    every = sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root)
                   for n in ns if not n.startswith((".", "_")))
    last = every[-1]
    work = tempfile.mkdtemp(prefix="zscore-cache-bench-", dir=os.path.dirname(root))
    data, cache = os.path.join(work, "data"), os.path.join(work, "cache")
    exe = os.path.join(os.path.dirname(sys.executable), "zscore")
    result: dict = {"dataset": root, "files": len(every), "new_file": last}
    try:
        _link_tree(root, data, skip=last)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            t = time.perf_counter()
            pipeline.fit(data, cache=cache, client=client)
            result["fill_cache_s"] = time.perf_counter() - t
            os.link(os.path.join(root, last), os.path.join(data, last))
            full, cached = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                a = pipeline.fit(data, client=client)
                full.append(time.perf_counter() - t)
                # Each cached re-fit starts from the cache as filled before the new file:
                # copy it so that the new file is read every time.
                shutil.rmtree(os.path.join(work, "c-copy"), ignore_errors=True)
                shutil.copytree(cache, os.path.join(work, "c-copy"))
                t = time.perf_counter()
                b = pipeline.fit(data, cache=os.path.join(work, "c-copy"), client=client)
                cached.append(time.perf_counter() - t)
                same = json.loads(a.to_json())["features"] == json.loads(b.to_json())["features"]
                result["bit_identical"] = result.get("bit_identical", True) and same
        result["in_process"] = {"full_fit_s": full, "cached_refit_s": cached,
                                "ratio": statistics.median(cached) / statistics.median(full)}
        full_p, cached_p = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run([exe, "fit", data, "--stats", os.path.join(work, "s.json"), "-q"],
                           check=True, capture_output=True)
            full_p.append(time.perf_counter() - t)
            shutil.rmtree(os.path.join(work, "c-copy"), ignore_errors=True)
            shutil.copytree(cache, os.path.join(work, "c-copy"))
            t = time.perf_counter()
            subprocess.run([exe, "fit", data, "--stats", os.path.join(work, "s.json"), "-q",
                            "--cache", os.path.join(work, "c-copy")], check=True,
                           capture_output=True)
            cached_p.append(time.perf_counter() - t)
        result["process"] = {"full_fit_s": full_p, "cached_refit_s": cached_p,
                             "ratio": statistics.median(cached_p) / statistics.median(full_p)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
