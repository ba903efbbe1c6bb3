"""The rule groups, in the order the engine calls them (see ``base.RuleGroup``).

A rule's text (id, severity, why, fix) is in ``tuidebug/checks/rules.py``; its logic is in the
group below that watches what it needs. A new group is one file here and one line in ``GROUPS``.
"""

from __future__ import annotations

from tuidebug.checks.groups.architecture import ArchitectureRules
from tuidebug.checks.groups.base import RuleGroup
from tuidebug.checks.groups.data import DataRules
from tuidebug.checks.groups.dataset import DatasetRules
from tuidebug.checks.groups.gradients import GradientRules
from tuidebug.checks.groups.losses import LossRules
from tuidebug.checks.groups.modes import ModeRules

GROUPS: tuple[type[RuleGroup], ...] = (
    ModeRules,
    DataRules,
    DatasetRules,
    GradientRules,
    ArchitectureRules,
    LossRules,
)
