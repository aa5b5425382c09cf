"""What to download and where it may go, decided before any byte is fetched.

`plan_download` picks the generation and the rendition for a variant
(falling back to the nearest one that exists) and names the file from the
task id, generation and variant (never from the URL, so a file cannot land
outside the folder the caller chose). It is pure. `check_destination`
inspects the file system (no network) to tell, before anything is fetched,
how a destination will be written or why it cannot be. `url_expiry` reads
the expiry a CDN URL carries in its `se=` parameter.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import secrets
import stat
import urllib.parse
from typing import Literal

from ._errors import DestinationExistsError, DownloadError, ResponseDecodeError
from ._models import VIDEO_VARIANTS, Task

__all__ = [
    "Destination",
    "DownloadPlan",
    "Variant",
    "check_destination",
    "check_download_choice",
    "plan_download",
    "url_expiry",
]

Variant = Literal["source", "md", "ld", "thumbnail", "spritesheet"]
"""A rendition of a generation: the three video qualities, or one of the two images.

source, md and ld are MP4 videos (best first); thumbnail and spritesheet are
images. The names are the keys of a generation's `encodings` in the task
payload (PROTOCOL.md, "The task envelope").
"""

# Nearest renditions first; a video falls back to the watermarked `url` last.
_FALLBACKS: dict[str, tuple[str, ...]] = {
    "source": ("source", "md", "ld", "url"),
    "md": ("md", "source", "ld", "url"),
    "ld": ("ld", "md", "source", "url"),
    "thumbnail": ("thumbnail",),
    "spritesheet": ("spritesheet",),
}
_DEFAULT_EXTENSION = {"thumbnail": ".webp", "spritesheet": ".jpg"}
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm"})
IMAGE_EXTENSIONS = frozenset({".webp", ".jpg", ".jpeg", ".png", ".gif"})
IMAGE_VARIANTS = frozenset({"thumbnail", "spritesheet"})
"""The variants that are images; the others are videos."""
_KNOWN_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class DownloadPlan:
    """The chosen rendition: its URL, the variant it really is, its generation, and its size if known."""

    __slots__ = ("expected_size", "generation", "task_id", "url", "variant")

    def __init__(
        self, task_id: str, variant: str, url: str, expected_size: int | None, generation: int = 0
    ) -> None:
        self.task_id = task_id
        self.variant = variant
        self.url = url
        self.expected_size = expected_size
        self.generation = generation

    @property
    def file_name(self) -> str:
        """A safe file name from the task id, generation and variant, with the URL's extension if known.

        Generation 0 is `<task>_<variant><ext>`; generation N > 0 is
        `<task>_<N>_<variant><ext>`.
        """
        stem = _UNSAFE.sub("_", self.task_id).strip("._") or "task"
        suffix = pathlib.PurePosixPath(urllib.parse.urlsplit(self.url).path).suffix.lower()
        if suffix not in _KNOWN_EXTENSIONS:
            suffix = _DEFAULT_EXTENSION.get(self.variant, ".mp4")
        number = f"_{self.generation}" if self.generation else ""
        return f"{stem[:120]}{number}_{self.variant}{suffix}"


def check_download_choice(variant: object, generation: object) -> None:
    """Refuse a variant or generation index that can never be valid, before any request.

    Raises:
        ValueError: `variant` is not one of `Variant`'s names, or `generation`
            is a bool or negative.
        TypeError: `generation` is not an int.
    """
    if variant not in VIDEO_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VIDEO_VARIANTS)}; got {variant!r}")
    if isinstance(generation, bool):
        raise ValueError(f"generation must be an index (0, 1, ...), not {generation!r}")
    if not isinstance(generation, int):
        raise TypeError(f"generation must be an int, not {type(generation).__name__}")
    if generation < 0:
        raise ValueError(f"generation must be >= 0; got {generation}")


def plan_download(task: Task, variant: Variant = "source", generation: int = 0) -> DownloadPlan:
    """Choose what to fetch: generation `generation`'s `variant`, else its nearest rendition.

    A task makes `n_variants` generations, listed in `data.generations`
    (PROTOCOL.md); `generation` indexes that list.

    Raises:
        ValueError, TypeError: As for `check_download_choice`.
        DownloadError: The task has not succeeded, its payload has the wrong
            shape (the `ResponseDecodeError` is the cause), it lists no
            generation or fewer than `generation + 1`, or the generation
            offers no such file.
    """
    check_download_choice(variant, generation)
    if task.status == "FAILURE":
        reason = f": {task.fail_reason}" if task.fail_reason else ""
        raise DownloadError(f"task {task.task_id} failed{reason}; it has no video")
    if task.status != "SUCCESS":
        raise DownloadError(f"task {task.task_id} has no video yet (status {task.raw_status or task.status})")
    try:
        video = task.video
    except ResponseDecodeError as exc:
        raise DownloadError(
            f"task {task.task_id} succeeded but its video list cannot be read: {exc}"
        ) from exc
    generations = video.generations if video is not None and video.generations else []
    if not generations:
        raise DownloadError(f"task {task.task_id} succeeded but lists no generated video")
    if generation >= len(generations):
        count = len(generations)
        raise DownloadError(
            f"task {task.task_id} has {count} generation{'s' if count != 1 else ''} "
            f"(indexes 0 to {count - 1}); there is no generation {generation}"
        )
    chosen = generations[generation]
    for candidate in _FALLBACKS[variant]:
        if candidate == "url":
            if chosen.url:
                return DownloadPlan(task.task_id, "source", chosen.url, None, generation)
            continue
        encoding = chosen.encodings.get(candidate) if chosen.encodings is not None else None
        if encoding is not None and encoding.path:
            return DownloadPlan(task.task_id, candidate, encoding.path, encoding.size, generation)
    where = f" in generation {generation}" if generation else ""
    raise DownloadError(f"task {task.task_id} offers no {variant} file{where}")


class Destination:
    """How a download will be written, as `check_destination` found it.

    Attributes:
        kind: "file": a regular file written atomically (a temporary file
            beside `target`, renamed over it when complete); "device": a
            character device or FIFO, written into directly; "folder": a
            folder checked before the file name is known.
        path: The path as the caller named it (inside the folder when one
            was named); a symlink stays a symlink.
        target: Where the bytes land: a symlink's final target for a
            "file", else `path`.
    """

    __slots__ = ("kind", "path", "target")

    def __init__(
        self, kind: Literal["file", "device", "folder"], path: pathlib.Path, target: pathlib.Path
    ) -> None:
        self.kind = kind
        self.path = path
        self.target = target

    def __repr__(self) -> str:
        return f"Destination({self.kind!r}, {str(self.path)!r}, target={str(self.target)!r})"


def check_destination(
    dest: str | os.PathLike[str], file_name: str | None = None, *, overwrite: bool = True
) -> Destination:
    """Tell how a download to `dest` will be written, or why it cannot be, without fetching anything.

    `dest` is a folder when it exists as one (through symlinks too) or ends
    with a slash; the file then goes inside it as `file_name`. With
    `file_name` None (the name is not known yet, as before a task is
    created) a folder `dest` is only checked for being a folder that can be
    written or created. What each kind of file system object becomes:

    - absent: created (missing parent folders too) by an atomic rename;
    - a regular file: replaced atomically, or refused with `overwrite` False;
    - a symlink to a file: the link is resolved and its final target is
      replaced atomically, in the target's folder; the link stays a link.
      With `overwrite` False it is refused, as a file that exists;
    - a symlink to a folder: the folder;
    - a dangling symlink: refused, as GNU cp does: where it points may be a
      path nobody meant to create;
    - a character device (`/dev/null`, a terminal) or a FIFO (a named pipe,
      `/dev/stdout` on a pipe): written into directly, never replaced;
    - a socket, a block device, or a folder where the file should go: refused.

    Writability is checked for real: a hidden, empty probe file
    (`.sora-probe-<random>`) is created and removed at once in the folder
    that will hold the file, or, when that folder does not exist yet, in its
    nearest existing ancestor, where it would be created (permission bits do
    not stop root; a read-only or virtual file system such as /proc does).

    Args:
        dest: A file path, or a folder.
        file_name: The file's name inside a folder `dest`, or None if not known yet.
        overwrite: Whether a file already at the destination may be
            replaced (the default). With False, one that exists is refused;
            with `file_name` None and a folder `dest` there is no file to
            look at yet, so only the folder is checked. A device or FIFO is
            written into, not replaced, so this does not apply to it.

    Returns:
        The `Destination`.

    Raises:
        DestinationExistsError: `overwrite` is False and the file (or a
            symlink to one) exists (a `DownloadError` and a `FileExistsError`).
        DownloadError: `dest` cannot be written as described above; an
            `OSError` found on the way is its cause.
    """
    text = os.fspath(dest)
    if not isinstance(text, str) or not text.strip():
        raise DownloadError(
            f"the destination must be a non-empty path, got {text!r}; use '.' for this folder"
        )
    if "\0" in text:
        raise DownloadError(f"the destination {text!r} holds a NUL character, which no path can")
    path = pathlib.Path(text)
    if text.endswith(("/", "\\")) or _is_folder(path):
        if file_name is None:
            _check_folder(path)
            return Destination("folder", path, path)
        path = path / file_name
    return _check_file(path, overwrite=overwrite)


def _is_folder(path: pathlib.Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:  # absent or unreachable: _check_file says why, if it matters
        return False


def _check_file(path: pathlib.Path, *, overwrite: bool) -> Destination:
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except (FileNotFoundError, NotADirectoryError) as exc:
        if os.path.islink(path):
            raise DownloadError(
                f"{path} is a symbolic link to {os.readlink(path)!r}, which does not exist; "
                "downloads do not write through a dangling link"
            ) from exc
        _check_folder(path.parent)  # a file standing where a folder should be is named there
        return Destination("file", path, path)
    except OSError as exc:
        raise DownloadError(f"cannot write to {path}: {_reason(exc)}") from exc
    if stat.S_ISREG(mode):
        if not overwrite:
            raise DestinationExistsError(path)
        target = pathlib.Path(os.path.realpath(path)) if os.path.islink(path) else path
        _check_folder(target.parent)
        return Destination("file", path, target)
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        if not os.access(path, os.W_OK):
            raise DownloadError(f"cannot write to {path}: permission denied")
        return Destination("device", path, path)
    if stat.S_ISDIR(mode):
        raise DownloadError(f"a folder stands at {path}, where the file would go")
    kind = "socket" if stat.S_ISSOCK(mode) else "block device" if stat.S_ISBLK(mode) else "special file"
    raise DownloadError(
        f"{path} is a {kind}; downloads write only regular files (replaced atomically), "
        "character devices and FIFOs"
    )


def _check_folder(folder: pathlib.Path) -> None:
    """Check that `folder` is, or can become, a folder where a new file can be created."""
    existing = folder
    while True:
        try:
            mode = os.stat(existing).st_mode
            break
        except (FileNotFoundError, NotADirectoryError) as exc:
            if os.path.islink(existing):
                raise DownloadError(
                    f"{existing} is a symbolic link to {os.readlink(existing)!r}, which does not exist"
                ) from exc
            if existing.parent == existing:
                raise DownloadError(f"cannot write to {folder}: {_reason(exc)}") from exc
            existing = existing.parent
        except OSError as exc:
            raise DownloadError(f"cannot write to {folder}: {_reason(exc)}") from exc
    if not stat.S_ISDIR(mode):
        raise DownloadError(f"{existing} is a file, not a folder, so nothing can be written under it")
    # Permission bits do not stop root, and do not tell a read-only or virtual
    # file system: only creating something tells. A missing folder would be
    # made in `existing`, which takes the same permission as a file there.
    probe = existing / f".sora-probe-{secrets.token_hex(6)}"
    what = f"a file in {folder}" if existing == folder else f"{folder} (in {existing})"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise DownloadError(f"cannot create {what}: {_reason(exc)}") from exc
    try:
        os.unlink(probe)
    except OSError as exc:
        raise DownloadError(f"cannot remove a file in {existing}: {_reason(exc)}") from exc


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


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
