"""The Lambda zip: reproducible, only the pinned wheels and the middleware's own code, small."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from lambda_runtime import Interpreter

from middleware_api.deploy import package
from middleware_api.deploy.package import Built, PackageError, build, check_installed, main, read_pins

MAX_ZIP_MB = 15


def test_the_command_rebuilds_the_same_bytes(
    lambda_zip: Built, interpreter: Interpreter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path), "--python-version", interpreter.version]) == 0
    path, size, digest = capsys.readouterr().out.splitlines()[:3]
    assert Path(path) == tmp_path / package.ZIP_NAME
    assert re.fullmatch(r"size: \d+\.\d\d MB \(\d+ bytes, \d+ files\)", size)
    assert digest == f"sha256: {lambda_zip.sha256}", "two builds of the same inputs differ"


def test_the_zip_holds_the_code_and_the_pinned_wheels_only(lambda_zip: Built, interpreter: Interpreter) -> None:
    with zipfile.ZipFile(lambda_zip.path) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert all(info.date_time == package.ZIP_TIME and info.external_attr >> 16 == 0o100644 for info in infos)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc") or name.startswith("bin/")]
    assert not [name for name in names if name.rsplit("/", 1)[-1] in package.INSTALLER_FILES]
    assert "middleware_api/lambda_handler.py" in names and "middleware_api/adapters/aws/compute.py" in names
    assert not [name for name in names if name.startswith(("middleware_api/worker/", "middleware_api/deploy/"))]
    assert not [name for name in names if name.startswith(("boto3/", "botocore/", "uvicorn/"))]
    distributions = {name.split("/", 1)[0] for name in names if ".dist-info/" in name}
    pinned = {f"{name}-{version}.dist-info" for name, version in read_pins().items()}
    assert {package.canonical(d) for d in distributions} == {package.canonical(d) for d in pinned}
    tag = f"cpython-{interpreter.version.replace('.', '')}-x86_64-linux-gnu"
    assert [name for name in names if name.startswith("pydantic_core/") and name.endswith(f".{tag}.so")]
    assert lambda_zip.size_mb < MAX_ZIP_MB, f"the zip is {lambda_zip.size_mb:.1f} MB"


def test_precompiled_zip_carries_hash_checked_bytecode(interpreter: Interpreter, tmp_path: Path) -> None:
    if not interpreter.faithful:
        pytest.skip("needs a Python 3.12 interpreter")
    built = build(tmp_path, precompile=interpreter.path)
    with zipfile.ZipFile(built.path) as archive:
        bytecode = archive.read("middleware_api/__pycache__/lambda_handler.cpython-312.pyc")
    assert int.from_bytes(bytecode[4:8], "little") == 0b11  # PEP 552: hash-based, checked against the source
    print(f"\nprecompiled Lambda zip: {built.size_mb:.2f} MB")


def test_an_unpinned_or_differing_dependency_is_refused(tmp_path: Path) -> None:
    for name in ("fastapi-0.163.2.dist-info", "stray_thing-1.0.dist-info"):
        (tmp_path / name).mkdir()
    with pytest.raises(PackageError, match=r"not pinned: stray-thing==1\.0"):
        check_installed(tmp_path, {"fastapi": "0.163.2"})
    with pytest.raises(PackageError, match=r"fastapi==0\.163\.2 \(pinned 0\.1\)"):
        check_installed(tmp_path, {"fastapi": "0.1", "stray-thing": "1.0"})
    with pytest.raises(PackageError, match="pinned but not installed: mangum"):
        check_installed(tmp_path, {"fastapi": "0.163.2", "stray-thing": "1.0", "mangum": "0.22.0"})
