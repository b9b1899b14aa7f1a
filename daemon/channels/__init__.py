"""Channel transports: each hands rendered messages to a provider and translates its errors."""
