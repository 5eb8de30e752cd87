"""Files: writes that never leave a half-written file behind (write beside the target, then
rename), digests of what a job read, and what differs between the records of two jobs."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from audiotext.errors import SettingError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; renames it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name rather than mkstemp, whose 0600 mode would make every output owner-only.
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}"
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def readable_as_umask(path: Path) -> None:
    """Gives `path` (a file, or every file under a folder) the mode the umask gives a new file (0644
    under 0022): safetensors writes its files owner-only (0600), which another user or a service
    account of a shared machine could not load, beside outputs anyone may read."""
    umask = _umask()
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.chmod(file, 0o666 & ~umask)


def _umask() -> int:
    """The process's umask, read where Linux states it: setting it to read it back (os.umask) would
    leave a moment in which another thread's new files get mode 0666."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # not Linux, or a kernel before 4.7
        umask = os.umask(0)
        os.umask(umask)
        return umask


def writable_file(path: str | os.PathLike, setting: str, reads: Iterable[Path] = (), reads_are: str = "") -> Path:
    """`path` when `atomic_path` can write it; SettingError naming `setting` for a folder, a path
    under a file, a folder this process may not write into, or one of the files the command `reads`
    (`reads_are` says what they are: the result would replace them unseen). Checked before the work
    whose result the file holds, so that a typo does not throw that work away."""
    path = Path(path)
    if path.is_file() and path.resolve() in {Path(p).resolve() for p in reads}:
        raise SettingError(f"{setting} {path} is {reads_are}, which this command reads: name a new file to write")
    if path.is_dir():
        raise SettingError(f"{setting} {path}: is a folder; name the file to write")
    folder = nearest_existing(path.parent)  # atomic_path makes the missing folders
    if not folder.is_dir():
        raise SettingError(f"{setting} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SettingError(f"{setting} {path}: cannot write into {folder} (permission denied)")
    return path


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists (or file: a path under a file is no path)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def holds_files(path: str | os.PathLike) -> bool:
    """Whether `path` is a file or a folder with anything in it: what a write there would replace."""
    path = Path(path)
    return path.exists() and (path.is_file() or any(path.iterdir()))


def file_digest(*paths: str | os.PathLike) -> bytes:
    """A 16-byte blake2b digest of the files' names and contents, read in 1 MiB chunks."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        digest.update(Path(path).name.encode() + b"\x00")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.digest()


def json_digest(value: Any) -> str:
    """A hex blake2b digest of a JSON value, keys sorted, so equal values digest alike."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=16).hexdigest()


def folder_digest(folder: str | os.PathLike) -> str:
    """The hex `file_digest` of a folder's own files, in name order (subfolders are not read)."""
    return file_digest(*sorted(p for p in Path(folder).iterdir() if p.is_file())).hex()


def first_difference(was: object, now: object, where: str = "") -> str:
    """'<key path> = <was> (now <now>)' for the first place two JSON values differ, '' when equal."""
    if isinstance(was, dict) and isinstance(now, dict):
        for key in sorted(set(was) | set(now)):
            found = first_difference(was.get(key), now.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return ""
    return "" if was == now else f"{where} = {json.dumps(was, ensure_ascii=False)} (now {json.dumps(now, ensure_ascii=False)})"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_csv_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """A CSV with a header from the first row's keys."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
