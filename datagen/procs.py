"""The processes of a local run: workers that die with the run, and write errors told in one line.

**Workers die with the run** (Linux). datatrove's local executor starts a ``multiprocess`` manager
(forked from the run) and, with more than one worker, a pool forked from a *forkserver*. Killed with
SIGKILL, the run leaves them behind: nothing tells a forked manager that its parent is gone, and the
forkserver waits as long as the manager holds its end of a pipe. ``die_with_parent`` asks the kernel
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to kill every process forked from the run's main thread when
that thread ends, and has the forkserver do the same for the pool workers it forks
(``datagen.forkserver_preload``, which the forkserver imports when it starts). Elsewhere it does nothing.

**Write errors**: a full disk or an unwritable output folder ends a run with ``OutputError``, one line
naming the path (``write_error``); ``quiet_write_errors`` keeps datatrove's task logger from printing
the traceback of such an error (it is not a bug in the pipeline), while every other error keeps its.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
# errors that mean "cannot write here" rather than a bug
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR, errno.EISDIR}
)
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")  # how Rust libraries (tokenizers) word an OSError

_state = {"armed": False, "quiet": False}
_fork = threading.local()


class OutputError(RuntimeError):
    """The output cannot be written (full disk, no permission, read-only); the message names the path."""


def _prctl_deathsig() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _before_fork() -> None:
    _fork.parent = os.getpid() if threading.current_thread() is threading.main_thread() else None


def _after_fork_in_child() -> None:
    parent = getattr(_fork, "parent", None)
    # a child of another thread would die with that thread, which may end long before the run
    if parent is None or not _prctl_deathsig():
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


RUN_PID_ENV = "DATAGEN_RUN_PID"


def die_with_parent() -> bool:
    """From now on every process forked from this process's main thread, and every forkserver started
    from now on with the workers it forks, is killed when its parent dies. Linux only; returns whether
    armed."""
    if not sys.platform.startswith("linux"):
        return False
    if not _state["armed"]:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _state["armed"] = True
    if threading.current_thread() is threading.main_thread():
        os.environ[RUN_PID_ENV] = str(os.getpid())  # the forkserver's parent, for ``arm_forkserver``
    try:
        import multiprocess.forkserver as fs
    except ImportError:
        return True
    preload = list(getattr(fs._forkserver, "_preload_modules", ["__main__"]))
    if "datagen.forkserver_preload" not in preload:
        fs.set_forkserver_preload([*preload, "datagen.forkserver_preload"])
    return True


def arm_forkserver() -> None:
    """In a forkserver that a run started (``DATAGEN_RUN_PID`` is its parent): die with the run, and
    have the workers it forks die with it. Every worker holds the forkserver's end of the pipe that would
    tell it the run is gone, so without this neither ever ends."""
    if not sys.platform.startswith("linux") or os.environ.get(RUN_PID_ENV) != str(os.getppid()):
        return
    if _prctl_deathsig() and os.environ.get(RUN_PID_ENV) != str(os.getppid()):
        os._exit(1)  # the run died before the signal was armed
    die_with_parent()


def _os_error(exc: BaseException) -> OSError | None:
    """``exc`` as an OSError: itself, or a library's error that carries ``(os error N)`` in its text."""
    if isinstance(exc, OSError):
        return exc
    m = _OS_ERROR_TEXT.search(str(exc))
    if m:
        code = int(m.group(1))
        return OSError(code, os.strerror(code))
    return None


def write_error(exc: BaseException, where: str | os.PathLike) -> str | None:
    """A one-line message for a write error anywhere in ``exc``'s chain, naming the file it happened on
    (or ``where``, the output folder, when the error does not say); None for any other error."""
    seen, todo, found = set(), [exc], []
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        os_err = _os_error(e)
        if os_err is not None and os_err.errno in WRITE_ERRNOS:
            found.append(os_err)
        todo += [e.__cause__, e.__context__]
    if not found:
        return None
    named = next((e for e in found if e.filename), found[0])
    path = str(named.filename or where)
    why = f"{named.strerror or os.strerror(named.errno)} ({errno.errorcode.get(named.errno, named.errno)})"
    inside = os.path.abspath(path).startswith(os.path.abspath(str(where))) if str(where) else True
    return f"output: cannot write {path}: {why}" if inside else f"cannot access {path}: {why}"


def _quiet_patcher(record) -> None:
    exc = record["exception"]
    if exc is not None and exc.value is not None and write_error(exc.value, "") is not None:
        record["exception"] = None


def quiet_write_errors() -> None:
    """datatrove's task logger logs a write error as its message alone, without the traceback."""
    if _state["quiet"]:
        return
    from loguru import logger

    logger.configure(patcher=_quiet_patcher)
    _state["quiet"] = True
