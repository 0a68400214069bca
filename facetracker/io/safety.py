"""What the app may touch: paths under its data root, files checked by content, archives unpacked safely.

The app reads and writes datasets and runs only under one folder, the data root
(`workspace.data_root()`). A path typed into the UI goes through `resolve_under`
first; an uploaded file's type comes from its first bytes (`sniff_kind`), never from its name; an
uploaded zip is unpacked by `extract_zip`, which refuses entries that would land outside the target
folder and archives that expand past a limit, and leaves nothing behind when it refuses.
"""

from __future__ import annotations

import copy
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

SNIFF_BYTES = 64
"""How many leading bytes `sniff_kind` needs to tell every kind apart."""

_COPY_CHUNK = 1 << 20


class UnsafePath(ValueError):
    """A path that would lead outside the folder it must stay in."""


class UnsafeArchive(ValueError):
    """An archive that would write outside its target folder or expand past a limit."""


def resolve_under(root: str | Path, user_path: str | Path) -> Path:
    """`user_path` (relative to `root`, or absolute) as a real path that lies inside `root`.

    Symlinks are followed before the check, so a link inside the root that points out of it is
    refused like `..` or an absolute path elsewhere. The path need not exist yet.
    """
    text = os.fspath(user_path)
    if "\x00" in text:
        raise UnsafePath(f"{text!r}: a path cannot contain a NUL character")
    _refuse_long_names(text)
    real_root = Path(root).expanduser().resolve()
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = real_root / candidate
    try:
        real = candidate.resolve()
    except RuntimeError:  # a symlink loop (Python < 3.13 raises RuntimeError, not OSError)
        raise UnsafePath(f"{text}: the path goes round a symbolic link loop") from None
    except OSError as error:
        raise UnsafePath(f"{text}: cannot follow the path ({error.strerror or error})") from None
    if real != real_root and real_root not in real.parents:
        raise UnsafePath(f"{text}: the path leads outside the data folder; only datasets and runs inside "
                         f"{real_root} can be used")
    return real


NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096
"""The longest file name and path Linux file systems take (ext4, XFS, Btrfs; in UTF-8 bytes)."""


def _refuse_long_names(text: str) -> None:
    """Refuse, in words, a path no file system can hold, before the system answers "File name too long"."""
    def shown(name: str) -> str:
        return name if len(name) <= 40 else f"{name[:40]}…"

    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX_BYTES:
            raise UnsafePath(f"{shown(part)}: this name is too long ({len(part):,} characters); a file or folder "
                             f"name can have at most {NAME_MAX_BYTES} bytes")
    if len(os.fsencode(text)) > PATH_MAX_BYTES:
        raise UnsafePath(f"{shown(text)}: this path is too long ({len(text):,} characters); a path can have at most "
                         f"{PATH_MAX_BYTES} bytes")


def sniff_kind(head: bytes) -> str | None:
    """The file type from its first bytes (at least `SNIFF_BYTES` of them), whatever the file is called.

    One of "jpeg", "png", "webp", "bmp", "mp4", "webm", "avi", "mov", "zip", or None.
    """
    head = bytes(head[:SNIFF_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"BM") and len(head) >= 26 and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56,
                                                                                              64, 108, 124):
        return "bmp"  # the DIB header size pins it: "BM" alone starts plenty of text files
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # Matroska and WebM share the EBML header; the DocType says which.
        return "webm" if b"webm" in head else None
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "mov"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"):
            return None  # still-image containers that share the ISO base media format
        return "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip") and head[:4] != b"RIFF":
        return "mov"  # old QuickTime files start with an atom, not ftyp
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    return None


def sniff_file(path: str | Path) -> str | None:
    """`sniff_kind` of a file on disk."""
    with open(path, "rb") as handle:
        return sniff_kind(handle.read(SNIFF_BYTES))


def extract_zip(archive: str | Path | BinaryIO, target_dir: str | Path, max_total_bytes: int,
                max_entries: int) -> list[Path]:
    """Unpack a zip into `target_dir` and return the files written, or refuse it and write nothing.

    Refused (`UnsafeArchive`): entries with absolute paths, `..`, drive letters or symlinks; more
    than `max_entries` entries (files and folders alike, counted before anything is written);
    more than `max_total_bytes` once expanded, judged both from the sizes the archive declares
    and from the bytes actually inflated (a zip bomb can lie in its header);
    damaged or encrypted archives. Everything is unpacked into a temporary folder beside the
    target first and moved in only when the whole archive passed, so a refusal leaves the target
    as it was. Files that already exist in the target are refused rather than overwritten.
    """
    target = Path(target_dir).resolve()
    name = archive if isinstance(archive, (str, Path)) else getattr(archive, "name", "the uploaded zip")
    declared = _declared_entry_count(archive)
    if declared is not None and declared > max_entries:
        raise UnsafeArchive(f"{name}: holds {declared:,} entries (files and folders), more than the "
                            f"{max_entries:,} allowed")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError):
        raise UnsafeArchive(f"{name}: not a zip archive (or a damaged one)") from None
    with zf:
        members = _checked_members(zf, name, max_total_bytes, max_entries)
        clashes = [str(rel) for _, rel in members if (target / rel).exists() and not (target / rel).is_dir()]
        if clashes:
            raise UnsafeArchive(f"{name}: {clashes[0]} already exists where it would be unpacked; nothing was "
                                "unpacked")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unzip-", dir=target.parent))
        # A file system error names the entry and the archive, never the temporary or target
        # folders: those are the server's, and the message goes to whoever uploaded the zip.
        info = None
        try:
            written = 0
            for info, rel in members:
                out = staging / rel
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                written = _inflate(zf, info, out, written, max_total_bytes, name)
            target.mkdir(parents=True, exist_ok=True)
            moved = []
            for info, rel in members:
                if info.is_dir():
                    (target / rel).mkdir(parents=True, exist_ok=True)
                    continue
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, target / rel)
                moved.append(target / rel)
            return moved
        except OSError as error:
            entry = f"the entry {info.filename!r}" if info is not None else "the archive"
            raise UnsafeArchive(f"{name}: cannot unpack {entry} ({error.strerror or type(error).__name__}); "
                                "nothing was unpacked") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


_END_OF_DIRECTORY = b"PK\x05\x06"
_END_SEARCH = 22 + 0xFFFF  # the end record, and the longest comment that may follow it


def _declared_entry_count(archive: str | Path | BinaryIO) -> int | None:
    """The entry count the zip's end record declares, read from its last bytes; None if not found.

    zipfile reads the whole central directory before anything can be counted, which takes long
    for an archive of very many entries (docs/safety.md). This refuses such an archive at once; a
    count that lies low is still caught by counting the entries zipfile found.
    """
    try:
        if isinstance(archive, (str, Path)):
            with open(archive, "rb") as handle:
                return _count_in_tail(handle)
        position = archive.tell()
        try:
            return _count_in_tail(archive)
        finally:
            archive.seek(position)
    except (OSError, ValueError, AttributeError):
        return None


def _count_in_tail(handle: BinaryIO) -> int | None:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - _END_SEARCH))
    tail = handle.read()
    # The real end record is the one whose comment length reaches exactly to the end of the file
    # (a comment may itself hold the signature).
    at = tail.rfind(_END_OF_DIRECTORY)
    while at >= 0 and not (len(tail) - at >= 22 and
                           int.from_bytes(tail[at + 20:at + 22], "little") == len(tail) - at - 22):
        at = tail.rfind(_END_OF_DIRECTORY, 0, at)
    if at < 0:
        return None
    total = int.from_bytes(tail[at + 10:at + 12], "little")
    if total != 0xFFFF:
        return total
    # 0xFFFF: a ZIP64 archive (more than 65,535 entries) keeps the count in its ZIP64 end record,
    # which the locator just before the end record points to.
    locator = tail[max(0, at - 20):at]
    if len(locator) < 20 or not locator.startswith(b"PK\x06\x07"):
        return None
    handle.seek(int.from_bytes(locator[8:16], "little"))
    record = handle.read(56)
    if len(record) < 40 or not record.startswith(b"PK\x06\x06"):
        return None
    return int.from_bytes(record[32:40], "little")


def _checked_members(zf: zipfile.ZipFile, name, max_total_bytes: int,
                     max_entries: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = zf.infolist()
    # Folders count too: each costs a mkdir twice (staging, then target), and 300,000 of them
    # fit in a 29 MB zip.
    if len(infos) > max_entries:
        raise UnsafeArchive(f"{name}: holds {len(infos):,} entries (files and folders), more than the "
                            f"{max_entries:,} allowed")
    files = [i for i in infos if not i.is_dir()]
    declared = sum(i.file_size for i in files)
    if declared > max_total_bytes:
        raise UnsafeArchive(f"{name}: would expand to {declared:,} bytes, more than the "
                            f"{max_total_bytes:,} allowed")
    members, seen = [], set()
    for info in infos:
        rel = _safe_member_path(info, name)
        if rel is None:
            continue
        key = str(rel).lower()
        if key in seen and not info.is_dir():
            raise UnsafeArchive(f"{name}: the entry {info.filename!r} appears twice")
        seen.add(key)
        members.append((info, rel))
    return members


def _safe_member_path(info: zipfile.ZipInfo, name) -> PurePosixPath | None:
    raw = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchive(f"{name}: the entry {raw!r} is a symbolic link; links are not unpacked")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # many zips set no type bits
        raise UnsafeArchive(f"{name}: the entry {raw!r} is not a plain file or folder")
    if "\x00" in raw:
        raise UnsafeArchive(f"{name}: the entry {raw!r} has a NUL character in its name")
    normal = raw.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        raise UnsafeArchive(f"{name}: the entry {raw!r} has an absolute path; it would land outside the target")
    parts = [p for p in normal.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchive(f"{name}: the entry {raw!r} climbs out with '..'; it would land outside the target")
    if not parts:
        return None
    if parts[0] == "__MACOSX":  # resource forks macOS adds to zips: never data
        return None
    return PurePosixPath(*parts)


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, written: int, max_total_bytes: int,
             name) -> int:
    """Inflate one entry, counting real bytes against what is left of the budget; returns the new total.

    zipfile stops reading at the size the entry declares, so the entry is opened with that size
    raised to the budget: a header that lies is then caught by the count (too big) or by
    comparing the count with the declared size (too small), not trusted.
    """
    budget_left = max_total_bytes - written
    relaxed = copy.copy(info)
    relaxed.file_size = budget_left + 1
    relaxed.CRC = None  # checked below once the real size is known; zipfile would test it mid-way
    count = 0
    crc = 0
    try:
        with zf.open(relaxed) as source, open(out, "wb") as sink:
            while True:
                chunk = source.read(_COPY_CHUNK)
                if not chunk:
                    break
                count += len(chunk)
                if count > budget_left:
                    raise UnsafeArchive(f"{name}: expands past the {max_total_bytes:,} bytes allowed "
                                        f"(at {info.filename!r}, whatever its header says); nothing was unpacked")
                crc = zlib.crc32(chunk, crc)
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise UnsafeArchive(f"{name}: the entry {info.filename!r} is damaged ({error}); nothing was unpacked") from None
    except RuntimeError as error:  # encrypted entries
        raise UnsafeArchive(f"{name}: the entry {info.filename!r} cannot be read ({error}); "
                            "nothing was unpacked") from None
    except NotImplementedError as error:
        raise UnsafeArchive(f"{name}: the entry {info.filename!r} uses an unsupported compression ({error}); "
                            "nothing was unpacked") from None
    except OSError as error:  # a full disk: write(2) names no file, so the entry and the archive are named
        if error.errno is None or error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, f"{name}: {info.filename}") from None
    if count != info.file_size or crc != info.CRC:
        raise UnsafeArchive(f"{name}: the entry {info.filename!r} declares {info.file_size:,} bytes but holds "
                            f"{count:,} (or fails its checksum); nothing was unpacked")
    return written + count
