"""examples/quickstart.ipynb executed in a real Jupyter kernel (nbclient): a real smoke sweep through the Python API,
its results table printed, the sweep opened again and its MLflow parent run read."""

from pathlib import Path

import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def printed(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


@pytest.mark.slow
def test_the_quickstart_notebook_runs_and_prints_the_results_table(tmp_path):
    start = tmp_path / "start"  # the kernel's working folder (in a checkout: examples/)
    start.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(start)}}
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3", resources=resources)
    try:
        client.execute()  # a failing cell raises CellExecutionError, with its traceback
    finally:
        nbformat.write(notebook, tmp_path / "executed.ipynb")  # every cell's output, for a look when it fails
    table = next(c for c in notebook.cells if "results-table" in c.metadata.get("tags", []))
    lines = printed(table).strip().splitlines()
    assert lines[0].split()[:2] == ["trial_id", "state"]
    assert len(lines) == 3 and all(line.split()[1] == "completed" for line in lines[1:])  # the spec's 2 trials
    work = next(printed(c) for c in notebook.cells if c.cell_type == "code" and "working in" in printed(c))
    assert not Path(work.split()[-1]).exists()  # the notebook worked in a folder of its own, and removed it
    assert not list(start.iterdir())  # and left nothing where it was started
