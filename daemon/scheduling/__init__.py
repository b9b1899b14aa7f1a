"""Orchestration of planning: plan campaigns into the ledger and fire their buckets on time."""
