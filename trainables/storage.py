"""Where outputs live: a local folder or a bucket URI (`s3://bucket/prefix`, `gs://...`).

Ray Train and Tune take such a location as their `storage_path` and reach it through pyarrow's
filesystems; the teacher cache and the sweep outputs use the same filesystems here, so a cluster
needs no shared disk when its storage is a bucket. An S3-compatible server (MinIO, ...) is reached
with `AWS_ENDPOINT_URL`, credentials with the usual `AWS_*` variables. No Ray or MLflow here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def join(location: str, *parts: str) -> str:
    """`location/part/...`; a URI keeps its query (e.g. `?endpoint_override=...`) at the end."""
    if not is_uri(location):
        return str(Path(location, *parts))
    base, mark, query = location.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + mark + query


def basename(location: str) -> str:
    """The last part of a location's path: `s3://b/runs/x?q=1` -> `x`."""
    return location.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a location and the location's path on it."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).resolve())


def on_same_filesystem(path: str, like: str) -> str:
    """A filesystem path (what Ray reports as a checkpoint's path) as a location beside `like`."""
    if not is_uri(like):
        return path
    scheme = like.split("://", 1)[0]
    query = like.partition("?")[2]
    return f"{scheme}://{path}" + (f"?{query}" if query else "")


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def subfolders(location: str) -> list[str]:
    """Names of the folders directly under `location` (none when it does not exist)."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def upload(local: str | os.PathLike, location: str) -> None:
    """Copy a local file or folder to `location` (replacing files of the same names)."""
    fs, path = filesystem(location)
    if Path(local).is_dir():
        fs.create_dir(path, recursive=True)
    else:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(
        str(Path(local).resolve()), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )


def download(location: str, local: str | os.PathLike) -> None:
    """Copy the file or folder at `location` to the local path `local`."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        Path(local).mkdir(parents=True, exist_ok=True)
    else:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        path, str(Path(local).resolve()), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )


def write_text(location: str, text: str) -> None:
    """Write a small text file at `location`, creating its folder."""
    fs, path = filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def read_text(location: str) -> str | None:
    """The text of the file at `location`, or None when there is none."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as src:
        return src.read().decode()


def delete(location: str) -> None:
    """Remove the file at `location`, if there is one."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def check_writable(location: str) -> None:
    """Write and delete a probe file; raises OSError (with the filesystem's reason) when that fails."""
    probe = join(location, f".write-probe-{os.getpid()}")
    write_text(probe, "ok")
    delete(probe)


def disk_refusal(folder: str | os.PathLike, reserve: int = 1 << 20) -> OSError | None:
    """An OSError (ENOSPC or EROFS) when the local disk of `folder` is read-only or has less than `reserve`
    bytes left, else None: what a failed write meant when the writer (torch.save) does not say."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
    if st.f_bavail * st.f_frsize < reserve:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    return None


def cache_root() -> Path:
    """This machine's scratch space for copies of remote folders."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dualkd"


def local_copy(location: str) -> Path:
    """A local folder with the files of the folder `location`: itself when local, else a download.

    Meant for folders that never change once written (a cached teacher, keyed by its settings): the
    download is made once per machine and shared by every process on it.
    """
    if not is_uri(location):
        return Path(location)
    target = cache_root() / "downloads" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        download(location, tmp)
        tmp.rename(target)
    except OSError:
        if not target.is_dir():  # not another process's finished download: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
