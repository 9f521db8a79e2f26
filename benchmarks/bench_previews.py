"""What an inline preview costs per image (issue 11, item 6).

Run: .venv/bin/python benchmarks/bench_previews.py [--runs 20]

The images are the simulator's: `alltoken_image` through the real server (in memory) against an
in-process simulator, at 1024x1024 and 2048x2048, with `preview: false`. For each saved PNG:

- `make_preview` alone (decode, scale to 512 px, encode under 50 KB), median and p90 of `--runs`, and
  the preview's size and format;
- the whole tool call with and without its preview (median of `--runs` calls each), i.e. what a caller
  waits longer — the saved-file read and the worker-thread hop included;
- the first preview in a fresh process, which also imports Pillow (a subprocess, median of 5).

A noise image of each size (Pillow's `effect_noise`, incompressible: the worst case for the encoder)
is timed with `make_preview` too.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

from alltoken_mcp.previews import make_preview
from alltoken_mcp.server import build_server
from alltoken_mcp.settings import load_settings
from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, serve_simulator

SIZES = (1024, 2048)
FIRST_PREVIEW = """
import sys, time
data = open(sys.argv[1], "rb").read()
start = time.perf_counter()
from alltoken_mcp.previews import make_preview
make_preview(data)
print(time.perf_counter() - start)
"""


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(values) * 1000:7.1f} ms (p90 {p90 * 1000:.1f})"


def _time_preview(data: bytes, runs: int) -> tuple[list[float], int, str]:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        preview = make_preview(data)
        timings.append(time.perf_counter() - start)
    return timings, len(preview.data), f"{preview.mime_type} {preview.width}x{preview.height}"


async def _calls(client: Client, size: int, preview: bool, runs: int) -> tuple[list[float], Path]:
    timings = []
    path = Path()
    for _ in range(runs):
        start = time.perf_counter()
        result = await client.call_tool(
            "alltoken_image", {"prompt": "bench", "size": f"{size}x{size}", "preview": preview}
        )
        timings.append(time.perf_counter() - start)
        assert not result.is_error
        assert result.structured_content is not None
        path = Path(result.structured_content["files"][0]["path"])
    return timings, path


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        async with serve_simulator(SimConfig(speed=0.001)) as sim:
            settings = load_settings(
                env={
                    "ALLTOKEN_BASE_URL": sim.base_url,
                    "ALLTOKEN_API_KEY": SIM_API_KEY,
                    "ALLTOKEN_MCP_HOME": home,
                }
            )
            async with Client(build_server(settings)) as client:  # type: ignore[arg-type]
                for size in SIZES:
                    without, path = await _calls(client, size, False, runs)
                    with_preview, _ = await _calls(client, size, True, runs)
                    data = path.read_bytes()
                    timings, out_bytes, shape = _time_preview(data, runs)
                    first = []
                    for _ in range(5):
                        out = await anyio.run_process([sys.executable, "-c", FIRST_PREVIEW, str(path)])
                        first.append(float(out.stdout))
                    kib = len(data) / 1024
                    print(f"simulator PNG {size}x{size} ({kib:.0f} KiB) → {shape}, {out_bytes} bytes")
                    print(f"  make_preview           {_ms(timings)}")
                    print(f"  first, with PIL import {_ms(first)}")
                    print(f"  alltoken_image, off    {_ms(without)}")
                    print(f"  alltoken_image, on     {_ms(with_preview)}")
    from PIL import Image

    for size in SIZES:
        buffer = io.BytesIO()
        Image.effect_noise((size, size), 100).convert("RGB").save(buffer, "PNG")
        timings, out_bytes, shape = _time_preview(buffer.getvalue(), max(3, runs // 4))
        print(f"noise PNG {size}x{size} ({buffer.tell() / 1024:.0f} KiB) → {shape}, {out_bytes} bytes")
        print(f"  make_preview           {_ms(timings)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    anyio.run(main, parser.parse_args().runs)
