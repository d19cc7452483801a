"""mergegate: rebuild declared model merges, audit their safety alignment, and gate publishing."""

__version__ = "0.1.0"
__all__ = ["__version__"]
