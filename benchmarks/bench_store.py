"""`list_jobs` against a state database holding many jobs (issue 10, item 10).

Run: .venv/bin/python benchmarks/bench_store.py [--sizes 10000,100000] [--runs 200]

For each size, one database is filled with that many jobs (a realistic mix: mostly completed images and
videos with a saved file each, some failed and cancelled, a few still running), then `Store.list_jobs`
— the call `list_jobs` and the `alltoken://jobs` resource make, worker-thread hop and row decoding
included — is timed `--runs` times for each filter: none, a common status, a rare one, a kind, and a
kind with a status. "before" is the same file with schema 3's indexes (`jobs_by_created` only, so every
matching row is sorted in a temp B-tree); "after" has schema 4's. Reported: median, p10–p90 and the
query plan.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from alltoken_mcp.store import (
    JOB_COLUMNS,
    Job,
    MediaFile,
    SqliteStore,
    list_jobs_query,
    new_job_id,
    to_column,
)

FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("no filter", {}),
    ("status=completed", {"status": "completed"}),
    ("status=processing", {"status": "processing"}),
    ("kind=video", {"kind": "video"}),
    ("kind=video status=failed", {"kind": "video", "status": "failed"}),
]
SCHEMA_3_INDEXES = """
DROP INDEX jobs_newest_first;
DROP INDEX jobs_by_kind_newest_first;
DROP INDEX jobs_by_status_newest_first;
DROP INDEX jobs_by_kind_and_status_newest_first;
CREATE INDEX jobs_by_created ON jobs (created_at DESC);
"""


def a_job(rng: random.Random, created_at: float) -> Job:
    kind = "video" if rng.random() < 0.3 else "image"
    roll = rng.random()
    status = (
        "completed"
        if roll < 0.85
        else "failed"
        if roll < 0.95
        else "cancelled"
        if roll < 0.99
        else rng.choice(["queued", "processing"])
    )
    job_id = new_job_id()
    files = []
    if status == "completed":
        ext, mime = ("mp4", "video/mp4") if kind == "video" else ("png", "image/png")
        files.append(
            MediaFile(
                path=f"/home/user/alltoken-output/a-red-fox-in-the-snow_{job_id}_0.{ext}",
                uri=f"alltoken://media/{job_id}/0",
                mime_type=mime,
                bytes=rng.randrange(100_000, 20_000_000),
                sha256=f"{rng.getrandbits(256):064x}",
                role="video" if kind == "video" else "image",
            )
        )
    model = "seedance-1.5-pro" if kind == "video" else "gpt-image-2"
    prompt = "A red fox walking through fresh snow at dawn, cinematic light, shallow depth of field"
    return Job(
        job_id=job_id,
        kind=kind,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        model=model,
        prompt=prompt,
        request={"model": model, "prompt": prompt, "size": "1024x1024"},
        idempotency_key=f"alltoken-mcp-{rng.getrandbits(128):032x}",
        submit_state="accepted",
        created_at=created_at,
        updated_at=created_at + 30,
        submitted_at=created_at,
        upstream_id=f"task_{job_id[4:]}",
        upstream_status=status,
        files=files,
        usage={"total_tokens": 1000} if status == "completed" else None,
        upstream_url="https://api.alltoken.ai/v1",
        upstream_key="0123456789ab",
    )


def fill(path: Path, count: int) -> None:
    """`count` jobs, one a minute up to now, written in one transaction (the store's own insert fsyncs
    each row, which would take minutes here)."""
    rng = random.Random(count)
    start = time.time() - count * 60
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    columns = ", ".join(JOB_COLUMNS)
    marks = ", ".join("?" for _ in JOB_COLUMNS)
    db.executemany(
        f"INSERT INTO jobs ({columns}) VALUES ({marks})",
        (
            [to_column(name, getattr(job, name)) for name in JOB_COLUMNS]
            for job in (a_job(rng, start + i * 60) for i in range(count))
        ),
    )
    db.execute("COMMIT")
    db.close()


def plan(path: Path, **filters: Any) -> str:
    sql, params = list_jobs_query(kind=filters.get("kind"), status=filters.get("status"), limit=20)
    db = sqlite3.connect(path)
    steps = [step for *_, step in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    db.close()
    return "; ".join(steps)


async def timings(path: Path, runs: int) -> dict[str, list[float]]:
    store = await SqliteStore.open(path)
    try:
        measured: dict[str, list[float]] = {}
        for label, filters in FILTERS:
            await store.list_jobs(limit=20, **filters)  # warm the page cache
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                jobs = await store.list_jobs(limit=20, **filters)
                samples.append((time.perf_counter() - started) * 1000)
            assert jobs, label
            measured[label] = samples
        return measured
    finally:
        await store.close()


def summary(samples: list[float]) -> str:
    deciles = statistics.quantiles(samples, n=10)
    return f"median {statistics.median(samples):7.2f} ms  p10–p90 {deciles[0]:6.2f}–{deciles[-1]:7.2f} ms"


async def bench(size: int, runs: int, directory: Path) -> None:
    after = directory / f"after-{size}.sqlite3"
    await (await SqliteStore.open(after)).close()
    started = time.perf_counter()
    await anyio.to_thread.run_sync(fill, after, size)
    print(f"\n{size:,} jobs (filled in {time.perf_counter() - started:.1f} s)")
    before = directory / f"before-{size}.sqlite3"
    shutil.copy(after, before)
    db = sqlite3.connect(before, isolation_level=None)
    db.executescript(SCHEMA_3_INDEXES)  # the file stays at user_version 4, so the store leaves it so
    db.close()
    results = {"before": await timings(before, runs), "after": await timings(after, runs)}
    for label, filters in FILTERS:
        print(f"  list_jobs({label}, limit=20)")
        for when, path in (("before", before), ("after", after)):
            print(f"    {when:6}  {summary(results[when][label])}   [{plan(path, **filters)}]")


async def run(sizes: list[int], runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        for size in sizes:
            await bench(size, runs, Path(directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated job counts")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per filter (default 200)")
    args = parser.parse_args()
    anyio.run(run, [int(size) for size in args.sizes.split(",")], args.runs)


if __name__ == "__main__":
    main()
