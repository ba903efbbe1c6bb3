"""The gallery's ``_common`` (one folder up: synthetic data, --steps) for the variants."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_gallery_common", Path(__file__).resolve().parents[1] / "_common.py"
)
assert _spec is not None and _spec.loader is not None
_gallery = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gallery)

FEATURES, CLASSES = _gallery.FEATURES, _gallery.CLASSES
args, classification, regression, batches = (
    _gallery.args,
    _gallery.classification,
    _gallery.regression,
    _gallery.batches,
)
