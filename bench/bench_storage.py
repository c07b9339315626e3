"""The training storage in a bucket: memory while a dataset file goes up, comes down into a node's cache, and
streams out as a download, as the file grows. It should stay flat.

Run: .venv/bin/python bench/bench_storage.py [--sizes 32,256] (MB)

moto's S3 server (its own process, as in tests/training/test_storage.py) is the bucket. Each operation runs in a
fresh process with Django set up on the bucket settings: `store_file` (what a build does with each file),
`local_copy` (a training node reading it, sha256 checked), `stream` read through (what a download sends), and for
contrast django-storages' own `open().read()` with its default spooling (`max_memory_size` 0: in memory). Growth is
the process's high-water mark (VmHWM) less its resident size just before; baseline: the smallest size, same run.
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BUCKET, REGION = "labweb-bench", "us-east-1"
OPERATIONS = ("store_file", "local_copy", "stream", "open().read(), django-storages' default")


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def write_jsonl(path: Path, megabytes: int) -> str:
    """A messages JSONL file of about `megabytes`, written a line at a time; its sha256."""
    digest = hashlib.sha256()
    record = {
        "messages": [{"role": "user", "content": "question " * 40}, {"role": "assistant", "content": "answer " * 80}]
    }
    line = (json.dumps(record) + "\n").encode()
    with path.open("wb") as handle:
        for _ in range(megabytes * 2**20 // len(line)):
            handle.write(line)
            digest.update(line)
    return digest.hexdigest()


def run(operation: str, megabytes: int, endpoint: str, folder: str, queue) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="labweb.settings",
        DEBUG="1",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/labweb_bench",  # never connected to: no query is made
        LABWEB_TRAINING_DIR=folder,
        LABWEB_TRAINING_CACHE_DIR=f"{folder}/cache-{operation[:5]}-{megabytes}",
        LABWEB_TRAINING_S3_BUCKET=BUCKET,
        LABWEB_TRAINING_S3_ENDPOINT_URL=endpoint,
        LABWEB_TRAINING_S3_REGION=REGION,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
    )
    import django

    django.setup()
    from training import storage

    name = f"datasets/bench-{megabytes}.jsonl"
    source = Path(folder) / f"source-{megabytes}.jsonl"
    sha256 = (Path(folder) / f"source-{megabytes}.sha256").read_text()
    store = storage.training_storage()
    store.exists("warm")  # the client and its connection made before the baseline
    if operation == "store_file":  # store_file moves its file into the cache: give it a copy
        staged = Path(folder) / f"staged-{megabytes}.jsonl"
        with source.open("rb") as handle, staged.open("wb") as copy:
            for block in iter(lambda: handle.read(2**20), b""):
                copy.write(block)
    before = memory_kb("VmRSS")
    started = time.perf_counter()
    if operation == "store_file":
        assert storage.store_file(staged, name, replace=True, sha256=sha256)
    elif operation == "local_copy":
        assert storage.local_copy(name, sha256=sha256).stat().st_size == source.stat().st_size
    elif operation == "stream":
        digest = hashlib.sha256()
        for chunk in storage.stream(name):
            digest.update(chunk)
        assert digest.hexdigest() == sha256
    else:
        store.max_memory_size = 0
        with store.open(name, "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == sha256
    queue.put(
        {
            "seconds": time.perf_counter() - started,
            "growth_mb": (memory_kb("VmHWM") - before) / 1024,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="32,256", help="file sizes in MB, comma separated (the first is the baseline)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    from tests.support.s3 import s3_server

    results = {}
    with tempfile.TemporaryDirectory(prefix="labweb-bench-storage-") as folder:
        with s3_server(Path(folder) / "moto.log") as endpoint:
            import boto3

            credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
            boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **credentials).create_bucket(Bucket=BUCKET)
            context = multiprocessing.get_context("spawn")
            for megabytes in sizes:
                sha256 = write_jsonl(Path(folder) / f"source-{megabytes}.jsonl", megabytes)
                (Path(folder) / f"source-{megabytes}.sha256").write_text(sha256)
                for operation in OPERATIONS:
                    queue = context.Queue()
                    process = context.Process(target=run, args=(operation, megabytes, endpoint, folder, queue))
                    process.start()
                    results[operation, megabytes] = queue.get(timeout=1800)
                    process.join()
    load = os.getloadavg()[0]
    print(
        f"file sizes {', '.join(f'{s} MB' for s in sizes)}; moto's S3 server on this machine; load average {load:.1f}"
    )
    print(f"{'operation':42} {'MB':>5} {'seconds':>8} {'MB/s':>7} {'growth MB':>10} {'vs ' + str(sizes[0]) + ' MB':>9}")
    for operation in OPERATIONS:
        base = results[operation, sizes[0]]["growth_mb"]
        for megabytes in sizes:
            r = results[operation, megabytes]
            ratio = r["growth_mb"] / base if base > 0.5 else float("nan")
            print(
                f"{operation:42} {megabytes:5} {r['seconds']:8.2f} {megabytes / r['seconds']:7.1f} "
                f"{r['growth_mb']:10.1f} {ratio:8.2f}x"
            )


if __name__ == "__main__":
    main()
