"""A calm wrapper around NVML (the ``pynvml`` module of the ``nvidia-ml-py`` distribution).

Written in the style of nvitop's ``api/libnvml.py``:

- NVML is initialised lazily, on the first query, so importing this module (or building an
  :class:`Nvml`) costs nothing and never touches the driver.
- A query never raises. A failed query returns a falsy "N/A" value (:data:`NA`, or a
  :class:`NotAvailable` that also carries NVML's reason), so callers write
  ``if is_na(value)`` instead of wrapping every call in ``try``.
- Each kind of failure is logged once per function (logger ``tuidebug.gpu``), not once per call:
  the supervisor polls about once a second for hours, and a driver that lacks one function would
  otherwise fill the log.
- Having no GPU is normal. No driver, no library, no devices, no permission: each becomes one
  calm reason string (:attr:`Nvml.reason`) built from NVML's own error text.

The NVML module is injectable (``Nvml(module=...)``) so that tests can pass a stand-in module.
This module imports neither Textual, Rich nor torch: it runs inside the supervisor.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Final

__all__ = [
    "ERROR_FUNCTION_NOT_FOUND",
    "ERROR_GPU_IS_LOST",
    "ERROR_NOT_SUPPORTED",
    "NA",
    "NotAvailable",
    "Nvml",
    "is_na",
]

logger = logging.getLogger("tuidebug.gpu")

# NVML's return codes, copied here so that a stand-in module does not have to define them and so
# that this file does not need pynvml to import.
ERROR_NOT_SUPPORTED: Final = 3
ERROR_NO_PERMISSION: Final = 4
ERROR_FUNCTION_NOT_FOUND: Final = 13
ERROR_GPU_IS_LOST: Final = 15
ERROR_RESET_REQUIRED: Final = 16

# Failures that say "this value does not exist here" rather than "something went wrong": they are
# logged at INFO, since a consumer GPU without power readings is not a problem to report.
_QUIET_CODES: Final = frozenset({ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND})

# Failures after which the device handle should not be trusted any more.
DEVICE_GONE_CODES: Final = frozenset({ERROR_GPU_IS_LOST, ERROR_RESET_REQUIRED})


class NotAvailable:
    """A falsy "N/A" value that a failed query returns, with the reason when there is one.

    Falsy so that ``value or default`` works, but note that 0 (a GPU at 0% utilisation) is falsy
    too: test with :func:`is_na` when 0 is a meaningful answer.
    """

    __slots__ = ("code", "reason")

    def __init__(self, reason: str = "N/A", code: int | None = None) -> None:
        self.reason = reason
        self.code = code

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return "N/A"

    def __repr__(self) -> str:
        return f"NotAvailable({self.reason!r}, code={self.code!r})"


NA: Final = NotAvailable()
"""The plain "N/A" value, for when there is no more specific reason."""


def is_na(value: object) -> bool:
    """True when ``value`` is a failed query's result (any :class:`NotAvailable`)."""
    return isinstance(value, NotAvailable)


class Nvml:
    """Lazily initialised NVML with queries that never raise.

    ``module`` is the NVML binding to use: by default ``pynvml`` is imported on first use; tests
    pass a stand-in module with the same function names. Thread-safe: the supervisor calls it from
    a worker thread, and initialisation is guarded by a lock.
    """

    def __init__(self, module: Any | None = None) -> None:
        self._module: Any | None = module
        self._lock = threading.Lock()
        self._initialised = False  # nvmlInit succeeded (and nvmlShutdown not called since)
        self._tried = False  # init has been attempted; failing once is final (see _init)
        self._reason: str | None = None
        self._logged: set[tuple[str, str]] = set()
        # Functions the library does not have: skip them instead of failing on every poll.
        self._missing: dict[str, NotAvailable] = {}

    # --- initialisation ---------------------------------------------------------------------

    @property
    def module(self) -> Any | None:
        """The NVML binding in use (None when pynvml could not be imported)."""
        self._ensure_init()
        return self._module

    @property
    def available(self) -> bool:
        """True when NVML initialised and reports at least one device."""
        return self._ensure_init() and self._reason is None

    @property
    def reason(self) -> str | None:
        """Why there are no GPUs to show, in one calm line; None when NVML works."""
        self._ensure_init()
        return self._reason

    def _ensure_init(self) -> bool:
        if self._tried:
            return self._initialised
        with self._lock:
            if not self._tried:
                self._init()
                self._tried = True
        return self._initialised

    def _init(self) -> None:
        # A failed init is not retried: the causes (no library, no driver, no permission) do not
        # go away while a run lasts, and retrying would reload a shared library every second.
        if self._module is None:
            try:
                self._module = importlib.import_module("pynvml")
            except Exception as exc:  # ImportError, or a broken install
                self._reason = "NVML: the pynvml module (nvidia-ml-py) is not installed"
                self._log_once("import", type(exc).__name__, f"{self._reason} ({exc})", quiet=True)
                return
        try:
            self._module.nvmlInit()
        except Exception as exc:
            self._reason = f"NVML: {describe_error(exc)}"
            self._log_once(
                "nvmlInit", _kind(exc), f"no GPU information: {self._reason}", quiet=True
            )
            return
        self._initialised = True
        # _call, not query: query would wait for the lock that this initialisation holds.
        count = self._call("nvmlDeviceGetCount", (), {})
        if is_na(count):
            self._reason = f"NVML: {count.reason}"
        elif count == 0:
            self._reason = "NVML: no NVIDIA GPU found"
            self._log_once("nvmlDeviceGetCount", "zero", self._reason, quiet=True)

    def close(self) -> None:
        """Shut NVML down if this object initialised it. Safe to call more than once."""
        with self._lock:
            if self._initialised and self._module is not None:
                try:
                    self._module.nvmlShutdown()
                except Exception as exc:
                    self._log_once("nvmlShutdown", _kind(exc), describe_error(exc), quiet=True)
            self._initialised = False

    # --- queries ----------------------------------------------------------------------------

    def query(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call NVML function ``name``; on any failure return a :class:`NotAvailable`.

        A function that the binding or the driver lacks (AttributeError, or NVML's
        "Function Not Found") is remembered and not called again.
        """
        if not self._ensure_init() or self._module is None:
            return NotAvailable(self._reason or "NVML is not initialised")
        return self._call(name, args, kwargs)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Keyword arguments can pick another C symbol (pynvml's nvmlDeviceGetMemoryInfo with
        # version= calls nvmlDeviceGetMemoryInfo_v2): a missing variant must not hide the other.
        key = f"{name}({','.join(sorted(kwargs))})" if kwargs else name
        missing = self._missing.get(key)
        if missing is not None:
            return missing
        try:
            fn = getattr(self._module, name)
        except AttributeError:
            na = NotAvailable("Function Not Found", ERROR_FUNCTION_NOT_FOUND)
            self._missing[key] = na
            self._log_once(name, "missing", f"{name}: not in this NVML binding", quiet=True)
            return na
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            code = _code(exc)
            na = NotAvailable(describe_error(exc), code)
            if code == ERROR_FUNCTION_NOT_FOUND:
                self._missing[key] = na
            self._log_once(key, _kind(exc), f"{key}: {na.reason}", quiet=code in _QUIET_CODES)
            return na

    def device_count(self) -> int:
        """Number of devices NVML reports; 0 when it cannot say."""
        count = self.query("nvmlDeviceGetCount")
        return 0 if is_na(count) else int(count)

    # --- logging ----------------------------------------------------------------------------

    def _log_once(self, function: str, kind: str, message: str, *, quiet: bool) -> None:
        key = (function, kind)
        if key in self._logged:
            return
        self._logged.add(key)
        logger.log(logging.INFO if quiet else logging.WARNING, "%s", message)


def describe_error(exc: BaseException) -> str:
    """NVML's own text for ``exc`` (pynvml's NVMLError str), or the exception's, never raising."""
    try:
        text = str(exc)
    except Exception:  # pynvml's __str__ can call back into the library
        text = ""
    if not text:
        code = _code(exc)
        text = f"NVML error {code}" if code is not None else type(exc).__name__
    return text


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _kind(exc: BaseException) -> str:
    # One log line per NVML return code, or per exception type for anything else.
    code = _code(exc)
    return f"nvml-{code}" if code is not None else type(exc).__name__
