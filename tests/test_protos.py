"""The committed gRPC stubs are what scripts/gen_protos.sh makes of protos/ today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = tuple(
    f"{proto}{suffix}"
    for proto in ("translator", "admin")
    for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
)


def test_committed_stubs_are_not_stale(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in STUBS:
        fresh = (tmp_path / "rnnmt" / "v1" / name).read_text(encoding="utf-8")
        committed = (ROOT / "rnnmt" / "v1" / name).read_text(encoding="utf-8")
        assert committed == fresh, (
            f"rnnmt/v1/{name} is stale: run scripts/gen_protos.sh and commit the result"
        )


def test_stubs_import_as_the_rnnmt_v1_package() -> None:
    from rnnmt.v1 import translator_pb2, translator_pb2_grpc

    service = translator_pb2.DESCRIPTOR.services_by_name["Translator"]
    assert service.full_name == "rnnmt.v1.Translator"
    assert [m.name for m in service.methods] == ["Translate", "TranslateStream", "GetModelInfo"]
    assert hasattr(translator_pb2_grpc, "TranslatorStub")
    assert translator_pb2.DecodingOptions.DESCRIPTOR.fields_by_name["length_penalty"].has_presence
