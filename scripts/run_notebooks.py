"""Execute notebooks top to bottom in a real kernel and save them, outputs included, under --out.

Used by scripts/demo.sh so the notebooks' figures are there to open after the main job. A cell error stops the
run with the notebook's name and the cell's error; the notebook is still saved up to that cell.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="directory for the executed notebooks")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="exaclimate-kernel-") as sockets:
        return run_all(args, sockets)


def run_all(args, sockets: str) -> int:
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        # IPC sockets in a temp dir: a local kernel needs no TCP ports (nor ipykernel's plain-TCP warning)
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        client = NotebookClient(nb, km=kernel, timeout=args.timeout,
                                resources={"metadata": {"path": str(Path.cwd())}})
        target = args.out / path.name
        try:
            client.execute()
        except CellExecutionError as err:
            print(f"error: {path}: {str(err).strip().splitlines()[-1]} (partial output in {target})", file=sys.stderr)
            return 1
        finally:
            nbformat.write(nb, target)
            if kernel.has_kernel:  # we own the kernel we passed in: stop it now, not when we exit
                kernel.shutdown_kernel()
        figures = sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
        print(f"{path} -> {target} ({figures} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
