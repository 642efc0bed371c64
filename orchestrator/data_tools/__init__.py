"""Tools for image data on disk: ImageNet-100 from ImageNet-1k, resized copies, and finding unreadable images.

- `images`: `IMAGE_SUFFIXES` (what training reads as an image) and `image_files`; no torch.
- `imagenet100`: the CMC class subset linked (or copied resized) from an ImageNet-1k tree (`build_imagenet100`,
  `prepare`: the command `python -m orchestrator.prepare_imagenet100`), with its class list
  `imagenet100_classes.txt`.
- `resize`: JPEG copies with the short side at a given size, in parallel.
- `decode_check`: decode every image once, in parallel, as training does (`verify_folder`: the command
  `python -m orchestrator.verify_images`).

The lowest package of `orchestrator/`: it imports only `trainables` (the image decoder, when it decodes), and
`orchestrator.spec`'s pre-flight counts images with it.
"""

from orchestrator import lazy_face

_MODULES = {  # module -> the names it offers the other packages (imported when first used)
    "images": ("IMAGE_SUFFIXES", "image_files"),
    "imagenet100": ("NUM_CLASSES", "VAL_PER_CLASS", "PrepareError", "read_classes", "build_imagenet100", "prepare"),
    "resize": ("resize_files",),
    "decode_check": ("find_bad_images", "verify", "verify_folder"),
}
__getattr__, __dir__, __all__ = lazy_face(__name__, _MODULES)
