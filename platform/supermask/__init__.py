"""supermask: continual learning with binary supermasks over one frozen, randomly initialised network."""

__version__ = "0.1.0"
