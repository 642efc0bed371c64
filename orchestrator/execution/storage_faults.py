"""Storage that fills up or turns read-only during a run: one line that says so, and a stop that keeps
what is done (every finished epoch's checkpoint, the trials that ended) for `--resume`.

Ray reports such a failure as a trial error with a worker traceback, retries the trial into the same
failure and goes on with the next trials, which fail the same way; Tune's own saves fail with log
lines only. The driver's guard (`orchestrator.search.tune_callbacks.StorageGuard`) stops the sweep at the
first trial that fails on its storage. No Ray here.
"""

from __future__ import annotations

import errno
from typing import Optional

from trainables import storage
from trainables.config import ConfigError

STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
}


class StorageFailed(ConfigError):
    """The storage stopped taking writes: nothing more can be kept, so the run stops."""


def storage_failure(location: str, reason: str) -> StorageFailed:
    return StorageFailed(
        f"storage {location} stopped taking writes ({reason}): what finished is kept; free space "
        "or make it writable, then start again (a sweep: the same command with --resume)"
    )


def is_storage_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


def from_os_error(err: OSError) -> StorageFailed:
    """The one line for a full or read-only disk met on the driver (`is_storage_error`)."""
    return storage_failure(str(err.filename or "?"), STORAGE_ERRNOS[err.errno])


def found_in(err: BaseException) -> Optional[StorageFailed]:
    """The guard's StorageFailed behind an error of Tune's (which wraps what its callbacks raise), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, StorageFailed):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def reason_in(text: str) -> Optional[str]:
    """A full or read-only disk named in an error's text (Python's or pyarrow's wording), else None."""
    text = text.lower()
    return next(
        (reason for code, reason in STORAGE_ERRNOS.items() if f"[errno {code}]" in text or reason in text), None
    )


def probe(location: str) -> Optional[str]:
    """Why `location` takes no writes now, or None when a test write succeeds."""
    try:
        storage.check_writable(location)
    except OSError as err:
        return STORAGE_ERRNOS.get(err.errno) or str(err).splitlines()[0]
    return None
