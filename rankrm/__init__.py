"""rankrm: reward models trained from human ranking lists, exported to ONNX, served fast.

This package holds what training and serving share and the command line. It imports
neither torch nor the web stack at import time.
"""

__version__ = "0.1.0"
