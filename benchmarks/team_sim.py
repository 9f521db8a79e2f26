"""The simulator for bench_team.py, in a process of its own: the bundled AllToken simulator, plus a count of
GETs per video task, which the simulator's own counters keep only per route.

Run: python benchmarks/team_sim.py --port PORT --speed SPEED

`GET /_bench/video_polls` answers {task_id: {"gets": n, "render_s": seconds}} for every video task
created so far (render_s is the real time from creation to the end of the render).
"""

from __future__ import annotations

import argparse
import collections
import json

import uvicorn
from starlette.types import Receive, Scope, Send

from alltoken_mcp.simulator import SimConfig, SimState
from alltoken_mcp.simulator.app import SimApp, build_app

POLLS_PATH = "/_bench/video_polls"
VIDEO_TASK_PREFIX = "/v1/videos/generations/"


class CountingSimulator:
    """The simulator's ASGI app, counting `GET /v1/videos/generations/{id}` per id."""

    def __init__(self, app: SimApp, state: SimState) -> None:
        self._app = app
        self._state = state
        self._gets: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = str(scope["path"])
            if path == POLLS_PATH:
                await self._answer_polls(send)
                return
            task_id = path.removeprefix(VIDEO_TASK_PREFIX)
            if scope["method"] == "GET" and task_id != path and "/" not in task_id:
                self._gets[task_id] += 1
        await self._app(scope, receive, send)

    async def _answer_polls(self, send: Send) -> None:
        polls = {
            task_id: {
                "gets": self._gets[task_id],
                "render_s": task.timeline.finished - task.timeline.created,
            }
            for task_id, task in self._state.videos.items()
        }
        body = json.dumps(polls).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--speed", type=float, required=True)
    args = parser.parse_args()
    # Enough balance for any run: a refused charge would be an error of the benchmark, not the server.
    state = SimState(SimConfig(speed=args.speed, usage_quota_usd=1e9))
    app = CountingSimulator(build_app(state), state)
    # uvicorn.run binds its own socket, so accepted connections get TCP_NODELAY (bench_client.py says
    # why that matters at millisecond scale); the backlog takes every replica's connections at once.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http="h11",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
