"""fastscan: find and fix what is wrong with Stable Diffusion model files."""

from fastscan._core import __version__

__all__ = ["__version__"]
