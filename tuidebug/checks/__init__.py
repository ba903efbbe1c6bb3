"""Training-bug checks: the practices guide as live rules (see ``rules.RULES``).

The probe side (``engine.py``, ``groups/``, ``lrfind.py``, ``config.py``, ``rules.py``) imports
neither Textual nor Rich; ``cli.py`` (``tuidebug check``, ``tuidebug lr-find``) and
``report.py`` are the console side.
"""
