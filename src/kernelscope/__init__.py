"""kernelscope: see and measure what the convolution kernels of a CNN learn.

Importing ``kernelscope`` (and ``kernelscope.ops``, the engine) never imports torch;
the parts that train or analyse PyTorch models import it when they are used.
"""

from kernelscope.errors import KernelscopeError

__version__ = "0.1.0"

__all__ = ["KernelscopeError", "__version__"]
