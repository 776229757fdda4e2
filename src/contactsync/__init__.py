"""contactsync: address-book sync, contact discovery and durable real-time events."""

__version__ = "0.1.0"
