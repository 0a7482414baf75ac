"""The run folder of one evolution: its name (exp, exp2, ...), its lock, atomic writes and the checkpoint.

Everything here is about surviving a killed driver: files are replaced atomically so a reader never sees
half a file, and the lock stops two orchestrations from appending to the same records.
"""
from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from evolve.errors import ConfigError

LOGGER = logging.getLogger(__name__)

LOCK_NAME = ".lock"
CHECKPOINT_NAME = "checkpoint.pkl"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one, never a mix.

    The temporary file lives in the same folder because ``os.replace`` is only atomic within a file system.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write_bytes`` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed; not every OS allows it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The errors of a full disk or quota, as a trial's failure reason words them.
FULL_DISK_REASON = re.compile(r"\[Errno (28|122)\]|No space left on device|Disk quota exceeded")
FULL_DISK_FREE_BYTES = 64 * 1024  # less free than this in the run folder: full (a trial log would not fit)


def disk_full(reason: str, folder: str | Path) -> bool:
    """Whether a failure with this ``reason`` came from a full disk: the reason says so, or ``folder``'s disk
    is full now. Such a failure says nothing of the trial's hyps, so it is never recorded as its result."""
    if FULL_DISK_REASON.search(reason or ""):
        return True
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # a folder gone, or no statvfs (Windows)
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_FREE_BYTES


def make_run_dir(project: str | Path, name: str = "exp", exist_ok: bool = False) -> Path:
    """Create and return ``project/name``, or ``name2``, ``name3``, ... when it already exists.

    With ``exist_ok`` the folder is returned as named (created if missing), which is how a run continues.
    """
    project = Path(project)
    base = project / name
    if base.exists() and not base.is_dir():
        raise ConfigError(f"{base}: exists and is not a folder")
    try:
        project.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(f"{project}: cannot create the project folder ({exc.strerror})") from exc
    if exist_ok:
        base.mkdir(exist_ok=True)
        return base
    # mkdir without exist_ok is the atomic claim: two drivers started together get different folders.
    for n in range(1, 10000):
        candidate = base if n == 1 else project / f"{name}{n}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"{project}: no free run folder name for '{name}' (tried {name} to {name}9999)")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _read_lock(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` from a lock file, or None when it is missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        return int(fields.get("pid", "")), fields.get("host", "").strip()
    except ValueError:
        return -1, fields.get("host", "").strip()


class RunLock:
    """Context manager holding ``run_dir/.lock`` (pid and host) for the lifetime of one orchestration.

    A lock left by a process that no longer exists on this host is taken over with a warning; a lock of a
    live process, or of another host (whose processes cannot be checked from here), is refused.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.host = socket.gethostname()
        self._held = False

    def acquire(self) -> "RunLock":
        if self._held:
            return self
        if not self.run_dir.is_dir():
            raise ConfigError(f"{self.run_dir}: run folder does not exist")
        content = f"pid={os.getpid()}\nhost={self.host}\n".encode("utf-8")
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            except OSError as exc:  # a read-only or full disk, no permission: nothing can be recorded
                raise ConfigError(f"{self.run_dir}: cannot write in the run folder ({exc.strerror})") from None
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._held = True
            return self
        raise ConfigError(f"{self.run_dir}: could not take {self.path} (another process keeps taking it)")

    def _handle_existing(self) -> None:
        owner = _read_lock(self.path)
        if owner is None:  # released between our open and our read
            return
        pid, host = owner
        if host and host != self.host:
            raise ConfigError(
                f"{self.run_dir} is in use by an orchestration on host {host} (pid {pid}); "
                f"if none is running there, delete {self.path}"
            )
        if _pid_alive(pid):
            raise ConfigError(
                f"{self.run_dir} is in use by a running orchestration (pid {pid}); "
                f"wait for it to end, stop it, or choose another --name"
            )
        LOGGER.warning("%s: taking over a stale lock of pid %s, which is no longer running", self.path, pid)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        owner = _read_lock(self.path)
        # Only remove our own lock: if it was deleted and retaken by hand, the new holder keeps it.
        if owner is not None and owner[0] == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # a folder made unwritable: the next run takes the dead pid's lock over
                LOGGER.warning("%s: cannot remove the lock (%s); the next run takes it over", self.path,
                               exc.strerror)

    @property
    def held(self) -> bool:
        return self._held

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Pickle ``state`` to ``run_dir/checkpoint.pkl`` atomically (a killed driver leaves the previous one)."""
    atomic_write_bytes(checkpoint_path(run_dir), pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """Return the state saved by ``save_checkpoint``; ConfigError naming the file if missing or corrupt."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found (nothing to resume in {Path(run_dir)})")
    try:
        with path.open("rb") as fh:
            state = pickle.load(fh)
    except Exception as exc:  # unpickling can raise almost anything on a damaged file
        reason = (str(exc).splitlines() or [""])[0]
        raise ConfigError(
            f"{path}: checkpoint is corrupt or unreadable ({type(exc).__name__}: {reason})"
        ) from exc
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: checkpoint holds {type(state).__name__}, expected a dict")
    return state
