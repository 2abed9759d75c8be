"""Safe file access for files fastanchor did not write: bounded reads of regular files only, one
directory walk that visits each real file once, bounded excerpts of foreign content for
messages, and atomic writes.

Every loader and reader in the package goes through :func:`read_regular` or
:func:`open_regular`; every writer through :func:`atomic_write`.
"""

from __future__ import annotations

import errno
import os
import reprlib
import stat
import tempfile
from typing import IO, Any, Iterator, List, Optional, Set, Tuple, Union

__all__ = [
    "FileRefused",
    "WriteFailed",
    "atomic_write",
    "excerpt",
    "iter_files",
    "open_regular",
    "read_regular",
    "read_text",
    "same_file",
    "sanitize",
    "walk_files",
]

PathLike = Union[str, "os.PathLike[str]"]

_MiB = 1 << 20
#: Default read limit of :func:`read_regular` (annotation files, lists, model files).
DEFAULT_LIMIT = 256 * _MiB
#: Length of an excerpt of foreign content in a message.
EXCERPT_CHARS = 40


class FileRefused(OSError):
    """A file that is not read: not a regular file (a FIFO, a device, a socket), or larger than
    the limit for its kind. An ``OSError``, so that every loader reports it like an unreadable
    file, naming it."""

    def __str__(self) -> str:
        return f"{sanitize(str(self.filename), 1000)}: {self.strerror}"


class WriteFailed(OSError):
    """A write that failed; the message names the target and says that it is unchanged."""

    def __str__(self) -> str:
        return str(self.strerror)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _open_fd(path: PathLike) -> Tuple[int, os.stat_result]:
    """A read-only descriptor of a regular file, never blocking: a FIFO or device is refused
    before it is read (``O_NONBLOCK`` makes opening a FIFO without a writer return at once)."""
    p = os.fspath(path)
    st = os.stat(p)
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(errno.EINVAL, f"not a regular file ({_kind(st.st_mode)})", p)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    fd = os.open(p, flags)
    try:
        st = os.fstat(fd)  # the file opened, which may have been swapped since the stat above
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(errno.EINVAL, f"not a regular file ({_kind(st.st_mode)})", p)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _size_text(n: int) -> str:
    return f"{n / _MiB:g} MiB" if n >= _MiB else f"{n:,} bytes"


def read_regular(path: PathLike, limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Raises
    ------
    FileRefused
        The path is not a regular file (a FIFO, a device, a socket, a folder), or it holds more
        than ``limit`` bytes (checked before reading, and again while reading a file that grows).
    OSError
        It cannot be opened or read.
    """
    p = os.fspath(path)
    fd, st = _open_fd(p)
    try:
        if st.st_size > limit:
            raise FileRefused(
                errno.EINVAL, f"too large ({_size_text(st.st_size)}; the limit is {_size_text(limit)})", p
            )
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(limit + 1 - total, max(st.st_size - total + 1, 64 * 1024), 16 * _MiB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefused(errno.EINVAL, f"too large (it grew past {_size_text(limit)} while read)", p)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: PathLike, limit: int = DEFAULT_LIMIT) -> str:
    """A regular file of at most ``limit`` bytes decoded as UTF-8 (a BOM is dropped).

    Raises ``UnicodeDecodeError`` when it is not UTF-8 (the caller names the file), and what
    :func:`read_regular` raises."""
    return read_regular(path, limit).decode("utf-8-sig")


def open_regular(path: PathLike) -> IO[bytes]:
    """A binary file object for a regular file (never blocks on a FIFO or reads a device); the
    caller bounds what it reads."""
    fd, _ = _open_fd(path)
    return os.fdopen(fd, "rb")


# --- messages ------------------------------------------------------------------------------------------


def sanitize(text: str, limit: int = 4000) -> str:
    """``text`` with control and other unprintable characters escaped (``\\n``, ``\\x1b``,
    ``\\u202e``), cut to ``limit`` characters with an ellipsis."""
    if len(text) > 2 * limit:
        text = text[: 2 * limit]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "\u2026"


class _Excerpt(reprlib.Repr):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = limit
        self.maxother = limit
        self.maxlong = limit
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 6

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {len(str(abs(x))) if x.bit_length() < 10_000 else 'thousands of'} digits>"
        return super().repr_int(x, level)

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(x[: self.maxstring + 8], level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    def repr_instance(self, x: Any, level: int) -> str:
        return f"<{type(x).__name__}>"  # never call a foreign object's own repr


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, safe representation of foreign content for a message: at most about ``limit``
    characters, nesting cut at three levels, control characters escaped. Never recurses
    deeply and never calls ``repr`` on anything but built-in scalars."""
    try:
        text = _Excerpt(limit).repr(value)
    except (RecursionError, ValueError, TypeError):  # a value no repr handles safely
        text = f"<{type(value).__name__}>"
    return sanitize(text, limit + 8)


# --- walking folders -------------------------------------------------------------------------------------


def iter_files(folder: PathLike) -> Iterator[Tuple[str, str, Optional[Tuple[int, int]]]]:
    """``(folder, path, identity)`` for every file below ``folder``, each real file once.

    Symbolic links are followed (a dataset often links its images folder from elsewhere), and
    every folder and file is identified by ``(st_dev, st_ino)``: a folder reached again (a link
    to a parent, fan-out links to one folder) is not entered again, and a file reached again
    (another link, a hard link) is not listed again. Hidden entries (a leading dot) are
    skipped. Folders are visited depth first in name order, so the output is deterministic.
    ``identity`` is the file's ``(st_dev, st_ino)`` (plain files without a stat call), or None
    for a broken or looping link (the caller's reader then reports it by name). Special files
    (FIFOs, devices) are listed, and refused when read.
    """
    top = os.fspath(folder)
    st = os.stat(top)
    seen_dirs: Set[Tuple[int, int]] = {(st.st_dev, st.st_ino)}
    seen_files: Set[Tuple[int, int]] = set()
    stack = [(top, st.st_dev)]
    while stack:
        d, dev = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot list folder {sanitize(d)}: {exc.strerror or exc}") from None
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue  # hidden files and folders (.git, macOS ._ resource forks)
            est: Optional[os.stat_result] = None
            try:
                if e.is_file(follow_symlinks=False):  # a plain file: its identity without a stat call
                    key = (dev, e.inode())
                    if key in seen_files:
                        continue
                    seen_files.add(key)
                    yield d, e.path, key
                    continue
                est = e.stat()  # a folder, a link (followed) or a special file
            except OSError:  # a broken link, or a loop of links (ELOOP)
                yield d, e.path, None
                continue
            key = (est.st_dev, est.st_ino)
            if stat.S_ISDIR(est.st_mode):
                if key not in seen_dirs:
                    seen_dirs.add(key)
                    subdirs.append((e.path, est.st_dev))
                continue
            if key in seen_files:
                continue
            seen_files.add(key)
            yield d, e.path, key
        stack.extend(reversed(subdirs))


def walk_files(folder: PathLike, suffixes: Tuple[str, ...]) -> List[str]:
    """The files below ``folder`` whose lower-case names end with one of ``suffixes``, as
    :func:`iter_files` visits them (each real file once; links followed, loops cut)."""
    return [path for _, path, _ in iter_files(folder) if os.path.basename(path).lower().endswith(suffixes)]


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same existing file (links resolved)."""
    try:
        return os.path.samefile(os.fspath(a), os.fspath(b))
    except OSError:
        return False


# --- writing ---------------------------------------------------------------------------------------------


def atomic_write(path: PathLike, data: Union[str, bytes], *, encoding: str = "utf-8") -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder is written,
    flushed to disk (``fsync``) and renamed over ``path``, so that ``path`` holds either its
    old content or the whole new one, never a part. On any failure the temporary file is
    removed and an ``OSError`` naming ``path`` is raised.

    A link at ``path`` is written through (the file it points to is replaced; the link stays).
    An existing file keeps its permission bits; a new one gets the usual ``0o666 & ~umask``.
    Text is written as given (no newline translation).
    """
    target = os.path.realpath(os.fspath(path))
    folder = os.path.dirname(target) or "."
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=folder)
        try:
            view = memoryview(payload)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        shown = sanitize(os.fspath(path))
        raise WriteFailed(
            exc.errno, f"cannot write {shown}: {exc.strerror or exc} (any existing file there is unchanged)"
        ) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    try:  # make the rename itself durable (best effort: not every system can open a folder)
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
