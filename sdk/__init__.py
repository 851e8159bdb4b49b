"""RoBiS Edge SDK: run RoBiS / INP-Former anomaly detection on camera frames, in-process."""

from .bundle import Bundle, create_bundle
from .errors import BackendError, BundleError, CalibrationError, InputError, RobisError
from .inspector import Inspector, Result
from .verdict import Region

__version__ = "0.1.0"
__all__ = ["Bundle", "create_bundle", "Inspector", "Result", "Region", "RobisError", "InputError",
           "BundleError", "CalibrationError", "BackendError", "__version__"]
