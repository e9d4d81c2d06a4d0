"""sipvis: real-time video instance segmentation and tracking (SipMask-VIS)."""

__version__ = "0.1.0"

from sipvis.errors import SipvisError

__all__ = ["SipvisError", "__version__"]
