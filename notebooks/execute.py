"""Execute the notebooks in place, so that they are committed with the outputs of a real run.

`make notebooks` runs this after `make demo`: the notebooks' defaults read the demo's fits in
runs/demo. The test suite executes them too (tests/test_demo.py), on the fits of the smoke demo it
runs, without writing them back.
"""

from __future__ import annotations

import os
import sys

import nbformat
from nbclient import NotebookClient

from tokeff.io import write_text

HERE = os.path.dirname(os.path.abspath(__file__))


def execute(name: str) -> None:
    path = os.path.join(HERE, name)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(HERE)}}).execute()
    write_text(path, nbformat.writes(notebook))
    print(f"executed {path}")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in sys.argv[1:] or sorted(n for n in os.listdir(HERE) if n.endswith(".ipynb")):
        execute(name)
