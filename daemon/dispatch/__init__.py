"""Dispatch: claimed ledger rows → rendered messages → channel senders → recorded outcomes."""
