"""PixelCNN++ (Salimans et al., ICLR 2017) in TensorFlow 2 / Keras 3: a faithful port
of the official openai/pixel-cnn code."""

from pixel_cnn_pp import nn
from pixel_cnn_pp.checkpoints import load_official_checkpoint
from pixel_cnn_pp.model import PixelCNNPP
from pixel_cnn_pp.sampling import sample

__all__ = ['PixelCNNPP', 'load_official_checkpoint', 'nn', 'sample']
