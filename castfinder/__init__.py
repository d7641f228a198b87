"""castfinder: find movie characters in streaming video."""

__version__ = "0.1.0"
