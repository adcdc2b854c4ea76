"""Opening an indexed file to serve it: the very file that was indexed, opened once.

A path checked and then opened again can be swapped in between (a symbolic link put in its place
for an instant serves whatever the link points to). So the file is opened once, beneath its
picture folder, without following any link the configuration does not allow, and what was opened
is compared with what was indexed (device, inode, size, modification time) through ``fstat`` on
that descriptor; the caller reads from the descriptor and nothing else.

- Links not followed (the default): ``openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``
  where the kernel has it (Linux 5.6), else one ``openat(..., O_NOFOLLOW)`` per component from the
  root's descriptor. A link anywhere below the root, or a ``..`` that leaves it, is refused.
- ``follow_symlinks`` on: links may lead anywhere (that is what the option says), so the file is
  opened by its path and must be the indexed inode; a row indexed before schema 5 (no inode
  recorded) must then also lie inside its root once resolved.

Every open uses ``O_NONBLOCK`` (a FIFO swapped in cannot block the thread) and ``O_NOCTTY``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass

MAX_SERVED = 1 << 30  # no photo is larger; a link swapped to a disk image is
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
# openat2(2): the syscall's number is the same on every Linux architecture (added in 5.6).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class NotServable(Exception):
    """The file cannot be served as indexed; the message says why (a 404 for the web app)."""


@dataclass(frozen=True)
class Indexed:
    """What the store recorded of a file when it was read."""

    path: str
    root: str
    size: int | None
    mtime_ns: int | None
    dev: int | None = None
    ino: int | None = None


def signed64(value: int) -> int:
    """An inode number as the store's 64-bit signed integer (the bits kept; btrfs and XFS can use
    the top bit)."""
    return value - (1 << 64) if value >= 1 << 63 else value


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works: bool | None = None


def _openat2(dir_fd: int, rel: str) -> int | None:
    """openat2 beneath ``dir_fd`` with no links at all; None where the kernel lacks it."""
    global _openat2_works
    if _openat2_works is False:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        _openat2_works = False
        return None
    how = _OpenHow(_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    syscall.restype = ctypes.c_long
    fd = syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(rel)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd >= 0:
        _openat2_works = True
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:  # no openat2, or a seccomp filter
        _openat2_works = False
        return None
    raise OSError(err, os.strerror(err), rel)


def _walk_nofollow(dir_fd: int, parts: list[str]) -> int:
    """One ``openat(O_NOFOLLOW)`` per component: a link at any step fails with ELOOP/ENOTDIR."""
    fd = os.dup(dir_fd)
    try:
        for name in parts[:-1]:
            nxt = os.open(name, _FLAGS | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], _FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def _beneath(root: str, path: str) -> int:
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if os.path.isabs(rel) or not parts or any(p in ("", ".", "..") for p in parts):
        raise NotServable("the file is outside its picture folder")
    root_fd = os.open(root, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
    try:
        fd = _openat2(root_fd, rel)
        return fd if fd is not None else _walk_nofollow(root_fd, parts)
    finally:
        os.close(root_fd)


def _inside(fd: int, root: str) -> bool:
    """Whether the file open at ``fd`` lies inside ``root`` (resolved), by the kernel's own name
    for it."""
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    folder = os.path.realpath(root).rstrip("/") + "/"
    return where.startswith(folder)


def open_indexed(file: Indexed, *, follow_symlinks: bool = False) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the indexed file and its ``fstat``; :class:`NotServable` with
    the reason otherwise. The caller closes the descriptor."""
    try:
        fd = os.open(file.path, _FLAGS) if follow_symlinks else _beneath(file.root, file.path)
    except NotServable:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR, errno.EMLINK):
            raise NotServable("the file is a symbolic link, or lies behind one") from None
        raise NotServable("the file is gone (moved, deleted, or its disk is offline)") from None
    try:
        st = os.fstat(fd)
        _check(file, fd, st, follow_symlinks)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _check(file: Indexed, fd: int, st: os.stat_result, follow_symlinks: bool) -> None:
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SERVED:
        raise NotServable("the file is not a photo image-search serves")
    if file.ino is not None and (st.st_dev, signed64(st.st_ino)) != (file.dev, file.ino):
        raise NotServable("the file is not the one that was indexed (it was replaced)")
    if (st.st_size, st.st_mtime_ns) != (file.size, file.mtime_ns):
        raise NotServable("the file changed since it was indexed (it is indexed again shortly)")
    if follow_symlinks and file.ino is None and not _inside(fd, file.root):
        raise NotServable("the file is outside its picture folder")


def read_at(fd: int, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (a thread may call this while another reads)."""
    return os.pread(fd, length, offset)
