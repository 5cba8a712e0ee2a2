"""The package version (a module of its own: importing it has no side effects)."""
__version__ = "0.2.0"
