"""cuconv: our own conv2d and max_pool2d kernels (CUDA, a fast CPU fallback, and a simulator that
runs the CUDA source on the CPU) as PyTorch custom operators and drop-in nn modules."""
import torch  # noqa: F401  (loads libtorch, which _C links against)

from . import _C
from . import config
from . import ops
from .ops import conv2d, conv2d_relu, conv2d_relu_max_pool2d, max_pool2d
from . import nn
from .convert import convert
from .simulate import simulate

config.get()  # a bad CUCONV_* environment variable is reported here, at import

__version__ = "0.1.0"
__all__ = ["conv2d", "conv2d_relu", "conv2d_relu_max_pool2d", "max_pool2d", "nn", "convert", "simulate", "config", "ops"]
