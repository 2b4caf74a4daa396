"""Generates src/vision_worker/_proto from proto/vision/worker/v1/worker.proto.

Run with the test extra installed: ``python gen.py``; tests/test_generated.py
fails when the committed code differs from what this produces.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = ROOT.parent.parent / "proto"
PROTO = "vision/worker/v1/worker.proto"
OUT = ROOT / "src" / "vision_worker" / "_proto"


def generate(out: pathlib.Path) -> None:
    """Writes worker_pb2.py and worker_pb2_grpc.py into ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(PROTO_ROOT / PROTO),
        ]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
        generated = pathlib.Path(tmp) / "vision" / "worker" / "v1"
        for name in ("worker_pb2.py", "worker_pb2_grpc.py"):
            text = (generated / name).read_text()
            # Package-relative import instead of the proto path's.
            text = text.replace("from vision.worker.v1 import worker_pb2 as", "from . import worker_pb2 as")
            (out / name).write_text(text)


if __name__ == "__main__":
    generate(OUT)
