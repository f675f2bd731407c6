"""The kernel atlas: how close learned kernels are to classical filters, against honest controls.

>>> from kernelscope.analysis.atlas import atlas
>>> import numpy as np
>>> result = atlas(np.random.default_rng(0).standard_normal((16, 1, 7, 7)), n_null=200)
>>> result.fractions["unexplained"] >= 0.8  # random kernels are not classical filters
True

Per kernel: the best match in the classical bank (:mod:`.matching`, :mod:`.templates`),
a free-centre Gabor fit (:mod:`.gabor`), spectral shape (:mod:`.spectral`), colour
(:mod:`.colour`), quality (:mod:`.quality`). Every score is judged against null kernels
of the same shape (:mod:`.controls`); classes are earned only above the null's
percentile (:mod:`.classify`); over training in :mod:`.evolution`.
"""

from kernelscope.analysis.atlas.classify import CLASSES
from kernelscope.analysis.atlas.core import AtlasResult, atlas
from kernelscope.analysis.atlas.evolution import Evolution, evolution
from kernelscope.analysis.atlas.source import atlas_of

__all__ = ["atlas", "atlas_of", "AtlasResult", "Evolution", "evolution", "CLASSES"]
