"""A driver that cannot open image-folder data: `trainables.data._imagefolder` raises in this process
only, while the Ray workers (other processes) import the real module. Run by
tests/test_driver_without_data.py as `python tests/driver_without_data.py MODULE ARGS...`, e.g.
`orchestrator.train SPEC --skip-data-check`; MODULE runs as `python -m MODULE ARGS...` would."""

import runpy
import sys

import trainables.data

REFUSAL = "the driver opened the image-folder data"


def refuse(*args, **kwargs):
    raise AssertionError(REFUSAL)


if __name__ == "__main__":
    trainables.data._imagefolder = refuse
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
