"""The engine: exact 2-D cross-correlation and convolution in NumPy, with explain traces.

Importing this package never imports torch.

>>> import numpy as np
>>> from kernelscope.ops import correlate2d, convolve2d, flip_kernel
>>> x = np.arange(16).reshape(4, 4)
>>> k = np.array([[1, 0], [0, -1]])
>>> correlate2d(x, k)
array([[-5, -5, -5],
       [-5, -5, -5],
       [-5, -5, -5]])
>>> bool((convolve2d(x, k) == correlate2d(x, flip_kernel(k))).all())
True
"""

from kernelscope.ops.correlate import METHODS, choose_method, convolve2d, correlate2d, flip_kernel
from kernelscope.ops.explain import Explanation, explain, format_explanation
from kernelscope.ops.matrices import parse_matrix
from kernelscope.ops.padding import PADDING_MODES, pad2d
from kernelscope.ops.shapes import output_shape, resolve_padding

__all__ = [
    "correlate2d",
    "convolve2d",
    "flip_kernel",
    "explain",
    "format_explanation",
    "Explanation",
    "parse_matrix",
    "output_shape",
    "resolve_padding",
    "pad2d",
    "choose_method",
    "METHODS",
    "PADDING_MODES",
]
