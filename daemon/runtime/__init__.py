"""The long-running daemon: lifecycle, campaign reloads, systemd integration."""

from topslot.runtime.service import CampaignsListener, Daemon

__all__ = ["CampaignsListener", "Daemon"]
