"""fedlab: reproducible low-data personalized federated learning from the terminal."""

__version__ = "0.1.0"
