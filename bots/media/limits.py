"""The caps every media check shares (a module of its own so worker processes import nothing
else of Loa's)."""

MAX_BYTES = 10 * 2**20  # one piece of evidence (a phone screenshot is well under 5 MB)
MAX_PIXELS = 40_000_000  # 40 MP: above any phone screen or camera in use; stops pixel bombs

__all__ = ["MAX_BYTES", "MAX_PIXELS"]
