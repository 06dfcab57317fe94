"""PixelCNN++ (Salimans et al., ICLR 2017) in TensorFlow 2 / Keras 3: a faithful port
of the official openai/pixel-cnn code."""

from pixel_cnn_pp import console  # noqa: F401  (first: TensorFlow's import without its start-up notices)
from pixel_cnn_pp import nn
from pixel_cnn_pp.checkpoints import load, load_official_checkpoint
from pixel_cnn_pp.codec import CodecError, compress, decompress
from pixel_cnn_pp.config import ConfigError
from pixel_cnn_pp.datafiles import DataError
from pixel_cnn_pp.model import PixelCNNPP
from pixel_cnn_pp.sampling import sample
from pixel_cnn_pp.scoring import bits_per_dim, log_prob, log_prob_map

__all__ = ['CodecError', 'ConfigError', 'DataError', 'PixelCNNPP', 'bits_per_dim', 'compress', 'decompress', 'load',
           'load_official_checkpoint', 'log_prob', 'log_prob_map', 'nn', 'sample']
