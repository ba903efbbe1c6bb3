"""The C kernel behind the CPU layer statistics (tuidebug/probe/_onepass.c) against torch."""

from __future__ import annotations

import ast
import math
import shutil
import subprocess
import sys
import sysconfig
from types import ModuleType

import pytest
import torch

from tuidebug.probe import statbuffer

SIZES = [1, 15, 16, 17, 1023, 1024, 1025, 5000, 32768 + 3]


def _kernel() -> ModuleType:
    if not statbuffer.kernel_available():
        pytest.skip("the C kernel was not built (no C compiler at install)")
    from tuidebug.probe import _onepass

    return _onepass


def test_the_kernel_is_built_where_a_c_compiler_is() -> None:
    """A failed build is silent by design (optional in setup.py): this says it here."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the torch reductions are used")
    assert statbuffer.kernel_available(), (
        "tuidebug.probe._onepass is missing although a C compiler is here: "
        "see the output of `pip install -e .`"
    )


@pytest.mark.parametrize("n", SIZES)
def test_stats_match_torch(n: int) -> None:
    kernel = _kernel()
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen) * 3 + 1
    x[:: max(1, n // 7)] = 0.0  # exact zeros in several blocks and in the tail
    if n > 2:
        x[n // 2] = -0.0
    out = torch.full((4,), 123.0)
    zeros = kernel.stats(x.data_ptr(), n, out.data_ptr())
    total, norm, lo, hi = out.tolist()
    assert zeros == int((x == 0).sum())
    assert total == pytest.approx(x.double().sum().item(), rel=1e-6, abs=1e-4)
    assert norm == pytest.approx(x.double().norm().item(), rel=1e-6)
    assert (lo, hi) == (x.min().item(), x.max().item())
    norm_only = torch.zeros(1)
    kernel.norm(x.data_ptr(), n, norm_only.data_ptr())
    assert norm_only.item() == pytest.approx(x.double().norm().item(), rel=1e-6)


@pytest.mark.parametrize("n", [0, *SIZES])
def test_host_sum_is_a_float64_sum(n: int) -> None:
    _kernel()
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 1e30
    total = statbuffer.host_sum(x)
    assert total == pytest.approx(x.double().sum().item(), rel=1e-12, abs=1e-12 * 1e30)
    x[n // 2 :] = 3e38  # float32's largest values: a float32 sum would overflow
    assert statbuffer.host_sum(x) == pytest.approx(x.double().sum().item(), rel=1e-12)
    if n:
        x[-1] = float("nan")
        assert math.isnan(statbuffer.host_sum(x) or 0.0)


def test_host_sum_declines_what_the_kernel_cannot_read() -> None:
    _kernel()
    assert statbuffer.host_sum(torch.ones(4, dtype=torch.float64)) is None
    assert statbuffer.host_sum(torch.ones(4, 4).t()[0]) is None  # not contiguous
    assert statbuffer.host_sum(torch.nn.Parameter(torch.ones(4))) is None  # a subclass
    assert statbuffer.host_sum(torch.ones(4).to_sparse()) is None


def test_a_view_inside_a_bigger_tensor_reads_only_its_elements() -> None:
    kernel = _kernel()
    base = torch.arange(100, dtype=torch.float32)
    view = base[10:30]  # contiguous, with a storage offset
    out = torch.zeros(4)
    kernel.stats(view.data_ptr(), view.numel(), out.data_ptr())
    assert out.tolist() == pytest.approx(
        [view.sum().item(), view.norm().item(), 10.0, 29.0], rel=1e-6
    )


@pytest.mark.parametrize("where", [0, 16, 1500, 32770])
def test_non_finite_values_read_like_torch(where: int) -> None:
    """NaN makes every statistic NaN (torch.aminmax reports NaN too); ±inf shows in min, max,
    the norm, and makes the sum NaN when both signs are there."""
    kernel = _kernel()
    x = torch.randn(32768 + 3, generator=torch.Generator().manual_seed(0))
    out = torch.zeros(4)
    x[where] = float("nan")
    kernel.stats(x.data_ptr(), x.numel(), out.data_ptr())
    assert all(v != v for v in out.tolist())
    x[where] = float("inf")
    kernel.stats(x.data_ptr(), x.numel(), out.data_ptr())
    assert out.tolist()[1:] == [float("inf"), x.min().item(), float("inf")]
    assert out.tolist()[0] == float("inf")
    x[(where + 7) % x.numel()] = float("-inf")
    kernel.stats(x.data_ptr(), x.numel(), out.data_ptr())
    total, norm, lo, hi = out.tolist()
    assert total != total and norm == float("inf")
    assert (lo, hi) == (float("-inf"), float("inf"))


def test_bad_arguments_raise_instead_of_reading_anywhere() -> None:
    kernel = _kernel()
    out = torch.zeros(4)
    with pytest.raises(ValueError):
        kernel.stats(0, 10, out.data_ptr())
    with pytest.raises(ValueError):
        kernel.stats(out.data_ptr(), -1, out.data_ptr())
    with pytest.raises(TypeError):
        kernel.stats(out.data_ptr(), 4)
    with pytest.raises(TypeError):
        kernel.norm("x", 4, out.data_ptr())
    with pytest.raises(ValueError):
        kernel.total(0, 5)


def test_the_probe_imports_without_the_kernel() -> None:
    """Where it was not built, the sampler still measures (with torch): a fresh interpreter
    with the module made unimportable."""
    code = (
        "import sys; sys.modules['tuidebug.probe._onepass'] = None\n"
        "import torch\n"
        "from tuidebug.probe import statbuffer\n"
        "assert not statbuffer.kernel_available()\n"
        "b = statbuffer.StatBuffer(torch.device('cpu'), 8); b.reset(1)\n"
        "x = torch.arange(5.0)\n"
        "assert b.put_stats(x) == 0 and b.last_zeros is None\n"
        "assert b.put_norms([x])\n"
        "print(b.written().tolist())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    total, norm, lo, hi, norm_again = ast.literal_eval(done.stdout)
    assert (total, lo, hi) == (10.0, 0.0, 4.0)
    assert norm == norm_again == pytest.approx(30**0.5)
