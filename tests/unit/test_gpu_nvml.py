"""The calm NVML wrapper: the real no-GPU path of this machine, and a stand-in NVML module."""

from __future__ import annotations

import logging
import sys

import pynvml
import pytest

from tuidebug.gpu.nvml import NA, NotAvailable, Nvml, is_na
from tuidebug.gpu.poller import GpuPoller
from tuidebug.gpu.standin import Failure, StandInGpu, StandInNvml


def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def _gpu_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tuidebug.gpu"]


# --- the real thing, on a machine without a GPU -------------------------------------------------


@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVML")
def test_real_no_gpu_path_is_one_calm_reason_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    # What pynvml raises here (no library, no driver...) is the reason, in NVML's own words.
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        expected = str(exc)
    nvml = Nvml()  # the real pynvml
    poller = GpuPoller(nvml)
    snaps = [poller.poll() for _ in range(50)]
    assert all(s.devices == [] for s in snaps)
    assert {s.reason for s in snaps} == {f"NVML: {expected}"}
    assert not nvml.available
    # CPU-only machines show CPU and RAM instead.
    assert snaps[-1].host.ram_total > 0 and snaps[-1].host.ram_used > 0
    assert snaps[-1].host.cpu_count >= 1
    records = _gpu_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.INFO  # no GPU is normal, not a warning
    assert expected in records[0].getMessage()
    poller.close()
    poller.close()  # twice is fine


def test_init_is_lazy() -> None:
    standin = StandInNvml([StandInGpu()])
    nvml = Nvml(module=standin)
    assert not standin.initialised  # building it touches nothing
    assert nvml.query("nvmlDeviceGetCount") == 1
    assert standin.initialised
    assert standin.calls[("nvmlInit", None)] == 1
    nvml.query("nvmlDeviceGetCount")
    assert standin.calls[("nvmlInit", None)] == 1
    nvml.close()
    assert not standin.initialised


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"),
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "NVML/RM version mismatch"),
    ],
)
def test_init_failures_become_one_reason_logged_once(
    code: int, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    standin = StandInNvml([StandInGpu()], init_error=code)
    poller = GpuPoller(Nvml(module=standin))
    snaps = [poller.poll() for _ in range(20)]
    assert all(not s.devices for s in snaps)
    assert snaps[0].reason is not None and text in snaps[0].reason
    assert standin.calls[("nvmlInit", None)] == 1  # a failed init is final, not retried per poll
    assert len(_gpu_records(caplog)) == 1


def test_no_devices_is_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    poller = GpuPoller(Nvml(module=StandInNvml([])))
    snaps = [poller.poll() for _ in range(5)]
    assert {s.reason for s in snaps} == {"NVML: no NVIDIA GPU found"}
    assert len(_gpu_records(caplog)) == 1


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    nvml = Nvml()
    assert nvml.reason is not None and "not installed" in nvml.reason
    assert is_na(nvml.query("nvmlDeviceGetCount"))
    assert GpuPoller(nvml).poll().reason == nvml.reason


def test_missing_function_is_na_logged_once_and_not_called_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    standin = StandInNvml(
        [StandInGpu(), StandInGpu()],
        missing={"nvmlDeviceGetPowerUsage"},  # an old binding: AttributeError
        # a driver that lacks the C symbol: NVML's Function Not Found
        failures=[Failure("nvmlDeviceGetEnforcedPowerLimit", None, 13)],
    )
    nvml = Nvml(module=standin)
    handle = nvml.query("nvmlDeviceGetHandleByIndex", 0)
    for _ in range(10):
        power = nvml.query("nvmlDeviceGetPowerUsage", handle)
        limit = nvml.query("nvmlDeviceGetEnforcedPowerLimit", handle)
        assert not power and is_na(power) and str(power) == "N/A"
        assert is_na(limit) and limit.reason == "Function Not Found"
    assert standin.calls[("nvmlDeviceGetEnforcedPowerLimit", 0)] == 1
    messages = [r.getMessage() for r in _gpu_records(caplog)]
    assert len(messages) == 2, messages
    assert all(r.levelno == logging.INFO for r in _gpu_records(caplog))


def test_any_exception_becomes_na() -> None:
    class Broken(StandInNvml):
        def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
            raise RuntimeError("ctypes blew up")

    nvml = Nvml(module=Broken([StandInGpu()]))
    handle = nvml.query("nvmlDeviceGetHandleByIndex", 0)
    value = nvml.query("nvmlDeviceGetTemperature", handle, 0)
    assert isinstance(value, NotAvailable) and value.reason == "ctypes blew up"
    assert not NA and str(NA) == "N/A"
    assert not is_na(0)  # a real 0 is an answer, not N/A


def test_errors_are_logged_once_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    standin = StandInNvml(
        [StandInGpu()],
        failures=[
            Failure("nvmlDeviceGetTemperature", 0, pynvml.NVML_ERROR_NOT_SUPPORTED, 1, 3),
            Failure("nvmlDeviceGetTemperature", 0, pynvml.NVML_ERROR_UNKNOWN, 4),
        ],
    )
    nvml = Nvml(module=standin)
    handle = nvml.query("nvmlDeviceGetHandleByIndex", 0)
    for _ in range(8):
        nvml.query("nvmlDeviceGetTemperature", handle, 0)
    records = _gpu_records(caplog)
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert "Not Supported" in records[0].getMessage()
    assert "Unknown Error" in records[1].getMessage()
