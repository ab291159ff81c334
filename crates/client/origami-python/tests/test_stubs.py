"""The shipped type stubs (origami_client/_native.pyi) describe the compiled module: mypy's
stubtest compares them with the runtime objects, and a typed use of the API passes
`mypy --strict`."""

import os
import subprocess
import sys
import textwrap

import pytest

try:
    import mypy  # noqa: F401
except ImportError:  # pragma: no cover - depends on the venv
    if os.environ.get("ORIGAMI_REQUIRE_PYTHON") == "1":
        raise
    pytest.skip("mypy is not installed", allow_module_level=True)


def run(args, cwd):
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd)
    return r.returncode, r.stdout + r.stderr


def test_stubtest_finds_the_stubs_match_the_module(tmp_path):
    # PEP 800's @disjoint_base is left out: @final already says the classes are not subclassed.
    code, out = run(["mypy.stubtest", "--ignore-disjoint-bases", "origami_client"], tmp_path)
    assert code == 0, out


def test_a_typed_caller_passes_mypy_strict(tmp_path):
    (tmp_path / "caller.py").write_text(textwrap.dedent('''
        from typing import Optional

        import numpy as np
        import numpy.typing as npt

        import origami_client


        def answer(url: str, x: npt.NDArray[np.float32]) -> Optional[npt.NDArray[np.float32]]:
            c = origami_client.Client(url, policy={"allow_simulated": True}, timeout=5.0)
            split: Optional[int] = c.evidence.split
            print(c.evidence.placement, split, c.reattested)
            try:
                return c.infer(x)
            except origami_client.EvidenceRejected as e:
                print(e.code)
            except origami_client.ServerError as e:
                print(e.status, e.code, e.url)
            except origami_client.EnclaveFailed as e:
                print(e.failure)
            sealed = c.seal(x)
            body: bytes = sealed.body
            return sealed.open(body)
        '''))
    code, out = run(["mypy", "--strict", "caller.py"], tmp_path)
    assert code == 0, out
