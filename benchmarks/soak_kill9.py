"""The kill -9 soak: media jobs survive any number of crashes with every file whole and no task paid twice.

Run from the repo root (the driver and helpers are imported from tests/test_jobs_crash.py):

    PYTHONPATH=. .venv/bin/python benchmarks/soak_kill9.py [--rounds 30] [--minutes 0] [--seed N]

The simulator runs in this process (speed 0.01) and every server is the installed `alltoken-mcp` stdio
entry point on one shared home. Each round starts a server, starts 1-4 image and video jobs without
waiting for them, and `kill -9`s the server at a moment picked by a random phase, pinned with simulator
faults rather than timing where it can be:

  random          no fault; killed 0-1 s after the calls were sent
  create-sent     the create reached AllToken but is not processed before the kill (a latency fault; the
                  simulator then drops it, its client being gone)
  create-held     the create was processed (the task exists) and its answer is held back
  past-window     create-held, then the restart comes after AllToken forgot the key: unconfirmed
                  submissions are aged 70 s and the simulator's keys are forgotten (videos must be found
                  in the task list, images must fail truthfully as submit_unconfirmed)
  mid-poll        a status poll is in flight (its answer held)
  mid-download    a video's CDN download or an image's R2 download stopped half-way (.partial on disk)
  after-delivery  the poll that hands out an image's one-time base64 was processed, its answer held

The next round's server picks up every unfinished job. After the last round one more server lets every
job settle, and the soak checks:

- every job completed, or failed as submit_unconfirmed (counted separately); any other end is listed;
- every saved file matches its job record (size, sha256) and the simulator's bytes for the task;
- no `.partial` files, and no file in the output directory that no job recorded;
- upstream tasks per job: every task the simulator created is attributed to the Idempotency-Key that
  created it (the simulator's `remember` is wrapped to log each one), so a job's count is the tasks
  created under its key — it must be exactly 1 for a completed job, at most 1 for a submit_unconfirmed
  one, and no task may exist that no job's key created.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from alltoken_mcp.simulator import RunningSimulator, SimConfig, serve_simulator
from alltoken_mcp.simulator import media as sim_media
from tests.rawstdio import StdioServer
from tests.test_jobs_crash import (
    HOLD_MS,
    IMAGE_CREATE,
    IMAGE_TASK,
    VIDEO_CREATE,
    VIDEO_TASK,
    job_rows,
    mcp_server,
    partial_files,
)

VIDEO_CDN = "/_cdn/videos/{name}"
IMAGE_R2 = "/_r2/images/{task_id}/{index}.png"
LATE_CREATE_MS = 2000
"""How long a `create-sent` request waits in the simulator before it would be processed."""
TRIGGER_SECONDS = 10.0
"""How long a round waits for its phase to be reached before it kills anyway (and says so)."""
SETTLE_SECONDS = 300.0
ACTIVE = ("queued", "processing")
PHASES = (
    "random",
    "create-sent",
    "create-held",
    "past-window",
    "mid-poll",
    "mid-download",
    "after-delivery",
)


@dataclass
class Soak:
    sim: RunningSimulator
    home: Path
    rng: random.Random
    tasks_by_key: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    phases: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    """Rounds whose phase was not reached in time (killed anyway)."""
    jobs_started: int = 0

    @property
    def out(self) -> Path:
        return self.home / "out"

    def log_task_keys(self) -> None:
        """Record every task the simulator creates under an Idempotency-Key, even once it forgets the key."""
        state = self.sim.state
        remember = state.remember

        def logged(owner: str, family: str, key: str, task_id: str) -> None:
            self.tasks_by_key[key].append(task_id)
            remember(owner, family, key, task_id)

        state.remember = logged  # type: ignore[method-assign]

    def tasks(self) -> int:
        return len(self.sim.state.images) + len(self.sim.state.videos)


async def reached(condition: Callable[[], bool], seconds: float = TRIGGER_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


def age_unconfirmed(home: Path, seconds: float) -> None:
    """Pretend the unconfirmed creates went out `seconds` earlier (past the idempotency window)."""
    with closing(sqlite3.connect(home / "state.sqlite3", timeout=10)) as db, db:
        db.execute("UPDATE jobs SET submitted_at = submitted_at - ? WHERE submit_state = 'sent'", (seconds,))


async def one_round(soak: Soak, number: int) -> str:
    sim, state, rng = soak.sim, soak.sim.state, soak.rng
    phase = rng.choice(PHASES)
    kinds = [rng.choice(("image", "video")) for _ in range(rng.randint(1, 4))]
    if phase == "after-delivery":
        kinds[0] = "image"
    target = kinds[0]  # the kind the phase's faults aim at (they hit whichever job's request comes first)
    create = IMAGE_CREATE if target == "image" else VIDEO_CREATE
    requests_before = state.requests[f"POST {create}"]
    tasks_before = soak.tasks()
    deliveries_before = state.b64_deliveries
    if phase == "create-sent":
        state.add_fault(path=create, method="POST", latency_ms=LATE_CREATE_MS)
    elif phase in ("create-held", "past-window"):
        state.add_fault(path=create, method="POST", hold_ms=HOLD_MS)
    elif phase == "mid-poll":
        state.add_fault(path=IMAGE_TASK if target == "image" else VIDEO_TASK, method="GET", hold_ms=HOLD_MS)
    elif phase == "mid-download" and target == "video":
        state.add_fault(path=VIDEO_CDN, method="GET", hold_ms=HOLD_MS, hold_at="mid_body")
    elif phase == "mid-download":
        state.add_fault(path=IMAGE_TASK, method="GET", drop="before_body")  # the base64 answer is lost
        state.add_fault(path=IMAGE_R2, method="GET", hold_ms=HOLD_MS, hold_at="mid_body")
    elif phase == "after-delivery":
        state.add_fault(path=IMAGE_TASK, method="GET", hold_ms=HOLD_MS)

    triggers: dict[str, Callable[[], bool]] = {
        "create-sent": lambda: state.requests[f"POST {create}"] > requests_before,
        "create-held": lambda: soak.tasks() > tasks_before,
        "past-window": lambda: soak.tasks() > tasks_before,
        "mid-poll": lambda: not state.faults,
        "mid-download": lambda: partial_files(soak.out) != [],
        "after-delivery": lambda: state.b64_deliveries > deliveries_before,
    }
    async with mcp_server(soak.home, sim.base_url) as server:
        for index, kind in enumerate(kinds):
            await start_job(server, kind, f"soak {number}.{index}", rng)
        soak.jobs_started += len(kinds)
        if phase == "random":
            await anyio.sleep(rng.uniform(0, 1.0))
            hit = True
        else:
            hit = await reached(triggers[phase])
        await server.kill()
    state.faults.clear()
    if phase == "past-window":
        state.forget_idempotency()
        await anyio.to_thread.run_sync(age_unconfirmed, soak.home, 70.0)
    soak.phases[phase] += 1
    if not hit:
        soak.missed[phase] += 1
    return f"{phase}{'' if hit else ' (not reached: killed anyway)'}, {len(kinds)} job(s): {', '.join(kinds)}"


async def start_job(server: StdioServer, kind: str, prompt: str, rng: random.Random) -> None:
    """Send the call without waiting for its answer: the kill may come first. Videos get one of 18
    duration × resolution pairs, so a video found in AllToken's list after the key window is usually,
    not always, the only one that fits (AllToken's list does not echo the prompt)."""
    if kind == "image":
        await server.start_tool("alltoken_image", {"prompt": prompt, "quality": "low", "wait_seconds": 0})
    else:
        arguments = {"duration": rng.randint(4, 12), "resolution": rng.choice(("480p", "720p"))}
        await server.start_tool("alltoken_video", {"prompt": prompt, "wait_seconds": 0, **arguments})


async def settle(soak: Soak) -> float:
    """One last server runs until no job is active; returns how long that took."""
    started = time.monotonic()
    async with mcp_server(soak.home, soak.sim.base_url) as server:
        while True:
            active = [row for row in job_rows(soak.home) if row["status"] in ACTIVE]
            if not active:
                break
            if time.monotonic() - started > SETTLE_SECONDS:
                break
            await server.tool("job_status", {"job_id": active[0]["job_id"], "wait_seconds": 15})
    return time.monotonic() - started


def expected_hashes(soak: Soak, row: dict[str, Any]) -> set[str] | None:
    """sha256 of the bytes the simulator delivers for the job's task (None if it has no task)."""
    state = soak.sim.state
    upstream_id = row["upstream_id"]
    if row["kind"] == "image":
        image = state.images.get(upstream_id)
        return {hashlib.sha256(data).hexdigest() for data in image.images or []} if image else None
    video = state.videos.get(upstream_id)
    return {hashlib.sha256(sim_media.mp4(video.prompt)).hexdigest()} if video else None


def why_unconfirmed(message: str) -> str:
    for clue, reason in (
        ("no way to look up an image", "an image cannot be looked up"),
        ("match it equally well", "several listed videos fit"),
        ("No matching video", "no listed video fits"),
    ):
        if clue in message:
            return reason
    return message


def check(soak: Soak) -> list[str]:
    """Every finding, one line each, and the summary printed along the way."""
    rows = job_rows(soak.home)
    problems: list[str] = []
    ends: Counter[str] = Counter()
    tasks_per_job: Counter[str] = Counter()
    recorded: set[str] = set()
    owned: set[str] = set()
    for row in rows:
        end = row["status"] if row["status"] != "failed" else f"failed ({row['error_code']})"
        unconfirmed = row["status"] == "failed" and row["error_code"] == "submit_unconfirmed"
        ends[
            f"{row['kind']} {end}" + (f": {why_unconfirmed(row['error_message'])}" if unconfirmed else "")
        ] += 1
        created = soak.tasks_by_key.get(row["idempotency_key"], [])
        owned.update(created)
        tasks_per_job[f"{len(created)} ({'submit_unconfirmed' if unconfirmed else row['status']})"] += 1
        if row["status"] == "completed":
            if len(created) != 1 or row["upstream_id"] not in created:
                problems.append(
                    f"{row['job_id']} completed with tasks {created} (upstream_id {row['upstream_id']})"
                )
        elif unconfirmed:
            if len(created) > 1:
                problems.append(f"{row['job_id']} failed unconfirmed after {len(created)} tasks: {created}")
        else:
            problems.append(f"{row['job_id']} ended {end}: {row['error_message'] or row['note']}")
        files = json.loads(row["files"])
        if files and row["status"] != "completed":
            problems.append(f"{row['job_id']} ended {end} but records {len(files)} file(s)")
        expected = expected_hashes(soak, row)
        for saved in files:
            path = Path(saved["path"])
            recorded.add(path.name)
            data = path.read_bytes() if path.is_file() else None
            if (
                data is None
                or len(data) != saved["bytes"]
                or hashlib.sha256(data).hexdigest() != saved["sha256"]
            ):
                problems.append(f"{row['job_id']}: {path.name} does not match its record")
            elif expected is not None and saved["sha256"] not in expected:
                problems.append(f"{row['job_id']}: {path.name} is not the simulator's bytes for its task")
        if row["status"] == "completed" and not files:
            problems.append(f"{row['job_id']} completed without files")
    partials = partial_files(soak.out)
    if partials:
        problems.append(f"{len(partials)} .partial file(s) left: {[p.name for p in partials]}")
    on_disk = [p.name for p in soak.out.iterdir()] if soak.out.exists() else []
    strays = sorted(name for name in on_disk if name not in recorded and not name.endswith(".partial"))
    if strays:
        problems.append(f"{len(strays)} file(s) no job recorded: {strays[:10]}")
    tasks = set(soak.sim.state.images) | set(soak.sim.state.videos)
    unowned = sorted(tasks - owned)
    if unowned:
        problems.append(f"{len(unowned)} task(s) created under no job's key: {unowned[:10]}")
    keys = {row["idempotency_key"] for row in rows}
    keyless = sum(len(ids) for key, ids in soak.tasks_by_key.items() if key not in keys)
    if keyless:
        problems.append(f"{keyless} task(s) created under a key no job holds")

    print(f"  jobs: {len(rows)} recorded of {soak.jobs_started} calls sent (the others were killed first)")
    for end, count in sorted(ends.items()):
        print(f"    {count:5}  {end}")
    print(
        f"  upstream tasks per job: {dict(sorted(tasks_per_job.items()))} "
        f"(tasks in the simulator: {len(tasks)})"
    )
    files = sum(len(json.loads(r["files"])) for r in rows)
    print(f"  files: {files} recorded, {len(recorded)} on disk checked; .partial left: {len(partials)}")
    return problems


async def soak_run(rounds: int, minutes: float, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        async with serve_simulator(SimConfig(speed=0.01)) as sim:
            # A request cut off by a kill makes uvicorn log a ClientDisconnect traceback: expected here.
            # (Set after the simulator started: uvicorn sets its loggers' levels when it is configured.)
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            soak = Soak(sim=sim, home=Path(tmp) / "home", rng=rng)
            soak.log_task_keys()
            print(
                f"kill -9 soak: seed {seed}, up to {rounds} rounds"
                + (f" or {minutes:g} min" if minutes else "")
            )
            done = 0
            for number in range(1, rounds + 1):
                if minutes and time.monotonic() - started > minutes * 60:
                    break
                line = await one_round(soak, number)
                done = number
                print(f"  round {number:3}: {line}", flush=True)
            took = await settle(soak)
            print(f"rounds: {done} in {time.monotonic() - started - took:.0f} s; settling took {took:.1f} s")
            print(
                f"  phases: {dict(soak.phases)}"
                + (f"; not reached in time: {dict(soak.missed)}" if soak.missed else "")
            )
            problems = check(soak)
    print(
        "PASS: every job settled truthfully, every file whole, one task per job" if not problems else "FAIL:"
    )
    for problem in problems:
        print(f"  - {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30, help="kill -9 rounds (default 30)")
    parser.add_argument("--minutes", type=float, default=0, help="stop starting rounds after this long")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    anyio.run(soak_run, args.rounds, args.minutes, seed)


if __name__ == "__main__":
    main()
