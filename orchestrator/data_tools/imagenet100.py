"""ImageNet-100 (the CMC class subset) from an ImageNet-1k folder tree: links, or resized copies.

Links `IMAGENET_ROOT/{train,val}/<wnid>` into `OUT/{train,val}/<wnid>` for the 100 listed classes (the
packaged list, `imagenet100_classes.txt`), so the `imagefolder` dataset reads OUT with no copy. Everything is
checked before anything is linked, and a rerun on a correct OUT is a no-op. With `resize` it writes a copy
instead (`orchestrator.data_tools.resize`). `python -m orchestrator.prepare_imagenet100` runs `prepare`.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

from orchestrator.data_tools.decode_check import verify
from orchestrator.data_tools.images import IMAGE_SUFFIXES, image_files
from orchestrator.data_tools.resize import resize_files

NUM_CLASSES = 100
CLASSES_FILE = "imagenet100_classes.txt"  # the CMC list, beside this module
VAL_PER_CLASS = 50
SPLITS = ("train", "val")


class PrepareError(Exception):
    """A problem the user can fix; the CLI prints it as one line."""


def read_classes(path: str | Path | None = None) -> list[str]:
    """WordNet ids, one a line; the packaged CMC list by default."""
    if path is None:
        text = resources.files(__package__).joinpath(CLASSES_FILE).read_text()
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise PrepareError(
                f"cannot read class file {path}: {e.strerror}; give a file with one WordNet id a line"
            ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def count_images(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())


def _check_source(root: Path, classes: list[str]) -> None:
    if len(classes) != NUM_CLASSES or len(set(classes)) != NUM_CLASSES:
        raise PrepareError(
            f"the class list has {len(set(classes))} distinct ids, ImageNet-100 needs {NUM_CLASSES}; fix --classes"
        )
    for split in SPLITS:
        if not (root / split).is_dir():
            raise PrepareError(
                f"{root / split} not found: IMAGENET_ROOT must hold train/<wnid>/ and val/<wnid>/ "
                "(val sorted into class folders)"
            )
    missing = [f"{split}/{wnid}" for split in SPLITS for wnid in classes if not (root / split / wnid).is_dir()]
    if missing:
        raise PrepareError(
            f"{len(missing)} class folders missing under {root} (first: {missing[0]}); "
            "is it the full ImageNet-1k tree with val sorted into class folders?"
        )
    for wnid in classes:
        n = count_images(root / "val" / wnid)
        if n != VAL_PER_CLASS:
            raise PrepareError(
                f"{root / 'val' / wnid} holds {n} images, ImageNet-1k has exactly {VAL_PER_CLASS} per class; "
                "restore the full validation set"
            )


def _link_split(source: Path, dest: Path, classes: list[str]) -> None:
    if dest.is_dir():
        extra = sorted(set(os.listdir(dest)) - set(classes))
        if extra:
            raise PrepareError(
                f"{dest} already holds {len(extra)} entries that are not ImageNet-100 classes "
                f"(first: {extra[0]}); remove them or choose an empty OUT"
            )
    dest.mkdir(parents=True, exist_ok=True)
    for wnid in classes:
        link, target = dest / wnid, (source / wnid).resolve()
        if link.is_symlink() and link.resolve() == target:
            continue
        if link.exists() or link.is_symlink():
            raise PrepareError(f"{link} already exists and is not a link to {target}; remove it or choose an empty OUT")
        link.symlink_to(target, target_is_directory=True)


def _resize_split(source: Path, dest: Path, classes: list[str], short: int, workers: int | None) -> list:
    """Resized JPEG copies of the classes' images; (path, reason) of those that could not be read."""
    if dest.is_dir():
        links = sorted(p.name for p in dest.iterdir() if p.is_symlink() or p.name not in classes)
        if links:
            raise PrepareError(
                f"{dest} already holds {len(links)} entries that are links or not ImageNet-100 "
                f"classes (first: {links[0]}); choose an empty OUT for --resize"
            )
    pairs = []
    for wnid in classes:
        for src in image_files(source / wnid):
            pairs.append((src, (dest / wnid / Path(src).name).with_suffix(".JPEG")))
    return resize_files(pairs, short, workers)


def build_imagenet100(
    root: str | Path, out: str | Path, classes: list[str], resize: int | None = None, workers: int | None = None
) -> dict:
    """Link (or, with `resize`, copy resized) the classes of `root` into `out`;
    {out, classes, train_images, val_images}.

    Raises PrepareError (nothing written) when the source is incomplete or `out` holds something else.
    With `resize` the summary's `unreadable` lists (path, reason) of source images left out.
    """
    root, out = Path(root), Path(out)
    _check_source(root, classes)
    unreadable = []
    for split in SPLITS:
        if resize:
            unreadable += _resize_split(root / split, out / split, classes, resize, workers)
        else:
            _link_split(root / split, out / split, classes)
    summary = {"out": str(out), "classes": NUM_CLASSES, **({"unreadable": unreadable} if resize else {})}
    for split in SPLITS:  # counted through the links, so a broken link shows up here
        summary[f"{split}_images"] = sum(count_images(out / split / wnid) for wnid in classes)
    return summary


def prepare(
    imagenet_root: str,
    out: str,
    classes_file: Optional[str] = None,
    resize: Optional[int] = None,
    verify_after: bool = False,
    workers: Optional[int] = None,
) -> int:
    """`python -m orchestrator.prepare_imagenet100`: build OUT, print its summary; the exit status (2: a
    problem to fix, nothing written; 1: unreadable images)."""
    if resize is not None and not 8 <= resize <= 4096:
        print(f"error: --resize {resize}: give the short side in pixels, 8 to 4096 (e.g. 256)", file=sys.stderr)
        return 2
    try:
        summary = build_imagenet100(imagenet_root, out, read_classes(classes_file), resize, workers)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot access {e.filename}: {e.strerror}; check the path and its permissions", file=sys.stderr)
        return 2
    for path, reason in summary.get("unreadable", []):
        print(f"{path}: {reason}")
    resized = f", short side {resize} px" if resize else ""
    print(
        f"ImageNet-100 ready at {summary['out']}: {summary['classes']} classes, "
        f"{summary['train_images']} train images, {summary['val_images']} val images{resized}"
    )
    if summary.get("unreadable"):
        print(f"{len(summary['unreadable'])} unreadable source images were left out")
        return 1
    if verify_after and verify(out, workers):
        return 1
    return 0
