"""Placeholder for the image, video and job tools (alltoken_image, alltoken_video, job_status, job_cancel,
list_jobs and the job/media resources). `server.build_server` calls `register`; the media tools'
owner replaces this module."""

from __future__ import annotations

from typing import Any


def register(server: Any) -> None:
    """Registers nothing yet."""
