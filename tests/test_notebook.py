"""The example notebook runs top to bottom against the local dataset."""

from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "ntk_fashion_mnist.ipynb"


def test_notebook_executes(fashion_mnist, monkeypatch):
    monkeypatch.setenv("NTKDEMO_DATASET", str(fashion_mnist))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "diagonal all exactly 2: True" in outputs
    assert "test accuracy  0.808" in outputs
