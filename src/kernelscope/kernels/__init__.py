"""The classical filter bank as named data, and filtering real images with it.

Before CNNs learned their kernels, computer vision designed them by hand: edge
detectors (Sobel, Prewitt, Scharr, Roberts), smoothing (box, Gaussian), the
Laplacian and its Gaussian versions (LoG, DoG) and Gabor filters. They are what
learned kernels are compared against.

Kernels are built in the open from 1-D parts (``sobel_x = outer([1, 2, 1], [-1, 0, 1])``)
and registered by name; constructors return arrays and applying them is separate:

>>> from kernelscope.kernels import get_kernel, filter_image, kernel_info
>>> get_kernel("sobel_x").astype(int)
array([[-1,  0,  1],
       [-2,  0,  2],
       [-1,  0,  1]])
>>> kernel_info("sobel_x").description
'Sobel (binomial-smoothed difference): vertical edges, positive where intensity increases to the right'
>>> filter_image("sample:camera", "sobel_x").shape
(512, 512)

Conventions: kernels are applied by cross-correlation; ``x`` grows right, ``y`` grows
down; derivative kernels are positive where intensity increases in their named
direction (see :mod:`kernelscope.kernels.edges`). The differences from scikit-image
are listed in :mod:`kernelscope.kernels.filtering`.
"""

from kernelscope.kernels.centre_surround import dog_kernel, log_kernel
from kernelscope.kernels.edges import (
    laplacian_4,
    laplacian_8,
    prewitt_kernels,
    roberts_kernels,
    rotate_ring,
    scharr_kernels,
    sobel_kernels,
)
from kernelscope.kernels.filtering import edge_magnitude, filter_image
from kernelscope.kernels.gabor import gabor_kernel
from kernelscope.kernels.registry import (
    FAMILIES,
    KernelInfo,
    format_kernel,
    get_kernel,
    kernel_info,
    kernel_names,
    parse_kernel_spec,
)
from kernelscope.kernels.smoothing import box_kernel, gaussian_kernel, identity_kernel
from kernelscope.kernels.transforms import DIHEDRAL_NAMES, dihedral_transforms, flip, rotate90

__all__ = [
    "get_kernel", "kernel_names", "kernel_info", "KernelInfo", "FAMILIES", "parse_kernel_spec",
    "format_kernel", "filter_image", "edge_magnitude",
    "dihedral_transforms", "DIHEDRAL_NAMES", "rotate90", "flip",
    "gabor_kernel", "gaussian_kernel", "box_kernel", "identity_kernel", "log_kernel", "dog_kernel",
    "sobel_kernels", "prewitt_kernels", "scharr_kernels", "roberts_kernels", "laplacian_4",
    "laplacian_8", "rotate_ring",
]
