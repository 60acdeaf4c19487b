"""Per-key statistics at scale: ``zscore fit --group-by user`` on 100,000 keys.

Writes (once) a dataset of ``--rows`` rows in ``--files`` files with an int64
``user`` column of ``--keys`` distinct values and four float64 features, then
runs ``zscore fit DATA --stats OUT --group-by user`` as a whole process under
``/usr/bin/time -v`` and prints one JSON line: wall seconds, peak resident
memory of the zscore process (MiB) and the artifact's size in bytes.

    python bench/keys.py bench/data/keys --keys 100000 --rows 1000000 --files 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write(path: str, keys: int, rows: int, files: int) -> None:
    if os.path.exists(path):
        return
    rng = np.random.default_rng(0)
    tmp = path + ".partial"
    os.makedirs(tmp, exist_ok=True)
    per = rows // files
    for i in range(files):
        # every key appears in the first file, so the key count is exact
        user = rng.integers(0, keys, per) if i else np.arange(per) % keys
        cols = {"user": pa.array(user, pa.int64())}
        for j in range(4):
            cols[f"f{j}"] = pa.array(rng.normal(10.0 ** j, 1.0 + j, per))
        pq.write_table(pa.table(cols), os.path.join(tmp, f"part-{i:03d}.parquet"))
    os.rename(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args(argv)
    write(args.dataset, args.keys, args.rows, args.files)
    zscore = os.path.join(os.path.dirname(sys.executable), "zscore")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "stats.json")
        cmd = ["/usr/bin/time", "-v", zscore, "fit", args.dataset, "--stats", out,
               "--group-by", "user", "-q", "--max-keys", str(args.keys)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and "--max-keys" in proc.stderr:  # a zscore before --max-keys
            cmd = cmd[:-2]
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
        assert wall is not None
        h, m, s = wall.groups()
        seconds = int(h or 0) * 3600 + int(m) * 60 + float(s)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        assert rss is not None
        print(json.dumps({"keys": args.keys, "rows": args.rows, "files": args.files,
                          "seconds": round(seconds, 1),
                          "peak_rss_mib": round(int(rss.group(1)) / 1024),
                          "artifact_bytes": os.path.getsize(out),
                          "command": " ".join(cmd[2:]).replace(out, "STATS.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
