"""The media tools and resources, registered in the order `tools/list` and `resources/list` show them:
`alltoken_image` (tools/image.py), `alltoken_video` (tools/video.py), `job_status`, `job_cancel`,
`list_jobs` (tools/job_tools.py), then the `alltoken://jobs…` and `alltoken://media…` resources
(tools/job_resources.py).

They share one saved-file reader and one previewer per server, so that the bounds those keep on worker
threads hold for the server as a whole.
"""

from __future__ import annotations

from mcp.server import MCPServer

from alltoken_mcp import files, previews
from alltoken_mcp.app_state import AppState
from alltoken_mcp.settings import Settings
from alltoken_mcp.tools import image, job_resources, job_tools, video
from alltoken_mcp.tools.job_previews import JobPreviews


def register(server: MCPServer[AppState], settings: Settings) -> None:
    """The media tools and resources; their descriptions quote `settings`' defaults and wait cap."""
    saved_files = files.SavedFileReader()
    shows = JobPreviews(saved_files, previews.Previewer())
    image.register(server, settings, shows)
    video.register(server, settings, shows)
    job_tools.register(server, settings, shows)
    job_resources.register(server, saved_files)
