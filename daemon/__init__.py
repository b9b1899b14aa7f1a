"""topslot: timed, tracked outbound marketing (email, SMS, IM)."""

__version__ = "0.1.0"
