"""Coupons, the pure part: generated codes (``codes``), pool files (``pool_file``) and stock
decisions (``stock``). Storage and the reserve/commit/release lifecycle live in
``topslot.store.coupons``."""
