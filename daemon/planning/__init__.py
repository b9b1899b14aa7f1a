"""Send-time planning (pure): time zones, working days, DST-exact slot instants, dispatch windows.

See docs/planning.md. Nothing here does I/O or reads the clock; ``now`` is always passed in.
"""

from topslot.planning.dispatch import (
    Bucket,
    DispatchWarning,
    DispatchWindow,
    dispatch_windows,
)
from topslot.planning.planner import LedgerRow, PlanContact, Planner, plan_rows
from topslot.planning.slot_instant import local_slot_instant
from topslot.planning.slots import (
    PlannedSlot,
    SkippedSlot,
    SlotPlan,
    lateness,
    plan_slots,
)
from topslot.planning.summary import (
    BucketSummary,
    PlanSummary,
    PlanSummaryBuilder,
    dispatch_starts,
    jsonl_lines,
    jsonl_record,
    summary_lines,
)
from topslot.planning.timezone_resolution import TzSource, resolve_timezone
from topslot.planning.workdays import WorkdayCalendar

__all__ = [
    "Bucket",
    "BucketSummary",
    "DispatchWarning",
    "DispatchWindow",
    "LedgerRow",
    "PlanContact",
    "PlanSummary",
    "PlanSummaryBuilder",
    "PlannedSlot",
    "Planner",
    "SkippedSlot",
    "SlotPlan",
    "TzSource",
    "WorkdayCalendar",
    "dispatch_starts",
    "dispatch_windows",
    "jsonl_lines",
    "jsonl_record",
    "lateness",
    "local_slot_instant",
    "plan_rows",
    "plan_slots",
    "resolve_timezone",
    "summary_lines",
]
