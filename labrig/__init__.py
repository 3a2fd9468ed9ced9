"""labrig: run a physical-neural-network lab — instruments, in-the-loop training, run records."""

from labrig._version import __version__

__all__ = ["__version__"]
