"""RoBiS Edge SDK: run RoBiS / INP-Former anomaly detection on camera frames, in-process."""

__version__ = "0.1.0"
