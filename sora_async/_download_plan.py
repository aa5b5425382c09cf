"""What to download and where to put it, decided without I/O.

Picks the rendition for a variant (falling back to the nearest one that
exists), names the file from the task id and variant (never from the URL,
so a file cannot land outside the folder the caller chose), and reads the
expiry a CDN URL carries in its `se=` parameter.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import urllib.parse

from ._errors import DownloadError
from ._models import VIDEO_VARIANTS, Task

__all__ = ["DownloadPlan", "plan_download", "target_path", "url_expiry"]

# Nearest renditions first; a video falls back to the watermarked `url` last.
_FALLBACKS: dict[str, tuple[str, ...]] = {
    "source": ("source", "md", "ld", "url"),
    "md": ("md", "source", "ld", "url"),
    "ld": ("ld", "md", "source", "url"),
    "thumbnail": ("thumbnail",),
    "spritesheet": ("spritesheet",),
}
_DEFAULT_EXTENSION = {"thumbnail": ".webp", "spritesheet": ".jpg"}
_KNOWN_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".webp", ".jpg", ".jpeg", ".png", ".gif"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class DownloadPlan:
    """The chosen rendition: its URL, the variant it really is, and its size if known."""

    __slots__ = ("expected_size", "task_id", "url", "variant")

    def __init__(self, task_id: str, variant: str, url: str, expected_size: int | None) -> None:
        self.task_id = task_id
        self.variant = variant
        self.url = url
        self.expected_size = expected_size

    @property
    def file_name(self) -> str:
        """A safe file name built from the task id and variant, with the URL's extension if known."""
        stem = _UNSAFE.sub("_", self.task_id).strip("._") or "task"
        suffix = pathlib.PurePosixPath(urllib.parse.urlsplit(self.url).path).suffix.lower()
        if suffix not in _KNOWN_EXTENSIONS:
            suffix = _DEFAULT_EXTENSION.get(self.variant, ".mp4")
        return f"{stem[:120]}_{self.variant}{suffix}"


def plan_download(task: Task, variant: str = "source") -> DownloadPlan:
    """Choose what to fetch for `variant`, falling back to the nearest rendition.

    Raises:
        ValueError: `variant` is not one of source, md, ld, thumbnail, spritesheet.
        DownloadError: The task has not succeeded, or offers no such file.
    """
    if variant not in VIDEO_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VIDEO_VARIANTS)}; got {variant!r}")
    if task.status != "SUCCESS":
        raise DownloadError(f"task {task.task_id} has no video yet (status {task.raw_status or task.status})")
    video = task.video
    generation = video.generations[0] if video is not None and video.generations else None
    if generation is None:
        raise DownloadError(f"task {task.task_id} succeeded but lists no generated video")
    for candidate in _FALLBACKS[variant]:
        if candidate == "url":
            if generation.url:
                return DownloadPlan(task.task_id, "source", generation.url, None)
            continue
        encoding = generation.encodings.get(candidate) if generation.encodings is not None else None
        if encoding is not None and encoding.path:
            return DownloadPlan(task.task_id, candidate, encoding.path, encoding.size)
    raise DownloadError(f"task {task.task_id} offers no {variant} file")


def target_path(dest: str | os.PathLike[str], plan: DownloadPlan) -> pathlib.Path:
    """Where the file goes: `dest` itself, or a safe name inside `dest` if it is a folder.

    A `dest` that exists as a folder, or is written with a trailing slash,
    is a folder.
    """
    text = os.fspath(dest)
    path = pathlib.Path(text)
    if path.is_dir() or text.endswith(("/", "\\")):
        return path / plan.file_name
    return path


def url_expiry(url: str) -> datetime.datetime | None:
    """The expiry time in a signed CDN URL's `se=` parameter, if it has a readable one."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("se")
    if not values:
        return None
    try:
        when = datetime.datetime.fromisoformat(values[0].replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)
