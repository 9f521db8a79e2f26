"""The job resources: `alltoken://jobs` (the recent records), `alltoken://jobs/{job_id}` (one record, to
subscribe to) and `alltoken://media/{job_id}/{index}` (a saved file, byte for byte). Each sees only the
calling person's jobs."""

from __future__ import annotations

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from pydantic import BaseModel

from alltoken_mcp import files
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.job_records import JobRecord
from alltoken_mcp.jobs import UnknownJobError
from alltoken_mcp.people import current_person
from alltoken_mcp.store import StoreError
from alltoken_mcp.tools.results import JSON_MIME, to_json
from alltoken_mcp.tools.state_resources import add_state_resource


class JobRecords(BaseModel):
    """`alltoken://jobs`: the full records."""

    jobs: list[JobRecord]


def register(server: MCPServer[AppState], saved_files: files.SavedFileReader) -> None:
    """The job resources; `saved_files` reads the media files back (the server's one reader)."""

    async def jobs_resource(state: AppState) -> str:
        jobs = await state.jobs.list_jobs(kind=None, status=None, limit=100, person=current_person())
        return to_json(JobRecords(jobs=[JobRecord.from_job(j, state.jobs.upstream) for j in jobs]))

    add_state_resource(
        server,
        "alltoken://jobs",
        jobs_resource,
        name="jobs",
        title="Media jobs",
        description="The 100 most recent image and video jobs (JSON), newest first.",
    )

    @server.resource(
        "alltoken://jobs/{job_id}",
        name="job",
        title="A media job",
        description="One job record (JSON). Subscribe to be notified when its status changes.",
        mime_type=JSON_MIME,
    )
    async def job_resource(job_id: str, ctx: Context[AppState]) -> str:
        try:
            job = await app_state(ctx).jobs.get(job_id, current_person())
        except UnknownJobError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except StoreError as exc:
            raise ResourceError(str(exc)) from exc
        return to_json(JobRecord.from_job(job, app_state(ctx).jobs.upstream))

    @server.resource(
        "alltoken://media/{job_id}/{index}",
        name="media",
        title="A saved media file",
        description="A generated image, video or last frame (binary). Prefer the absolute path from the job "
        "record for large files.",
    )
    async def media_resource(job_id: str, index: str, ctx: Context[AppState]) -> bytes:
        if not index.isdigit():
            raise ResourceNotFoundError(f"{index!r} is not a file index (0, 1, …)")
        try:
            saved = await app_state(ctx).jobs.media_file(job_id, int(index), current_person())
        except LookupError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except StoreError as exc:
            raise ResourceError(str(exc)) from exc
        try:
            # Only the regular file the job recorded, byte for byte: a file swapped for a symlink (say to
            # /proc/self/environ) or a FIFO, or edited in place, is refused without serving any of it.
            return await saved_files.read(saved.path, size=saved.bytes, sha256=saved.sha256)
        except files.SavedFileMissing as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except files.SavedFileError as exc:
            raise ResourceError(str(exc)) from exc
