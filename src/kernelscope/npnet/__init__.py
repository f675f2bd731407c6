"""A CNN from first principles in NumPy: the engine's forward, its exact backward, PyTorch's update rules.

Layers (:mod:`~kernelscope.npnet.layers`): Conv2d, ReLU, MaxPool2d, AvgPool2d,
Flatten, Linear; softmax cross-entropy; SGD with momentum and weight decay, Adam and
AdamW; a LeNet-5 builder. Given the same initial weights, data order and
hyper-parameters it follows PyTorch's training step for step (tests pin that).
:mod:`~kernelscope.npnet.step` holds one training step, evaluation and augmentation; the
loop over them is ``kernelscope train --backend numpy`` (:mod:`kernelscope.train.numpy_backend`).
Importing this package never imports torch; :mod:`~kernelscope.npnet.torch_bridge` imports it
where it crosses over.

>>> import numpy as np
>>> from kernelscope.npnet import lenet, softmax_cross_entropy, SGD
>>> net = lenet(input_size=28, seed=0)
>>> x = np.zeros((2, 1, 28, 28), dtype=np.float32)
>>> loss, grad = softmax_cross_entropy(net.forward(x), np.array([3, 7]))
>>> _ = net.backward(grad)
>>> SGD(net.parameters(), lr=0.01, momentum=0.9).step(net.gradients())
"""

from kernelscope.npnet.layers import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from kernelscope.npnet.loss import softmax_cross_entropy
from kernelscope.npnet.network import Sequential, lenet
from kernelscope.npnet.optim import SGD, Adam

__all__ = ["Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Linear", "softmax_cross_entropy",
           "Sequential", "lenet", "SGD", "Adam"]
