"""The committed generated code is what gen.py makes from proto/ (run `python gen.py` after a change)."""

from __future__ import annotations

import importlib.util
import pathlib
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_committed_code_matches_the_proto() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "gen.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with tempfile.TemporaryDirectory() as tmp:
        gen.generate(pathlib.Path(tmp))
        for name in ("worker_pb2.py", "worker_pb2_grpc.py"):
            fresh = (pathlib.Path(tmp) / name).read_text()
            committed = (ROOT / "src" / "vision_worker" / "_proto" / name).read_text()
            assert fresh == committed, f"{name} is stale: run `python clients/python-worker/gen.py`"
