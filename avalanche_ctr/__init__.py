"""avalanche-ctr: CTR and ExSSNeT as drop-in Avalanche strategies and plugins."""

__version__ = "0.1.0"
__all__ = ["__version__"]
