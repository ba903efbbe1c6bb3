"""The name and version tuidebug's own training-state checkpoints carry in their ``format`` and
``format_version`` keys: written by ckpt/save.py and ckpt/sharded.py, recognized by the readers
(ckpt/formats/) and the restore. A leaf module, so that readers and writers share it without
importing each other (tests/unit/test_import_graph.py)."""

FORMAT_NAME = "tuidebug.training_state"
FORMAT_VERSION = 1
