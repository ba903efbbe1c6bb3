"""Types of the C kernel (``_onepass.c``; built by setup.py where a C compiler is)."""

def stats(data_ptr: int, numel: int, out_ptr: int, /) -> int:
    """Write sum, L2 norm, min, max of float32 values at ``out_ptr``; return the zeros."""

def norm(data_ptr: int, numel: int, out_ptr: int, /) -> None:
    """Write the L2 norm of float32 values at ``out_ptr``."""

def total(data_ptr: int, numel: int, /) -> float:
    """The sum of float32 values, accumulated in double."""
