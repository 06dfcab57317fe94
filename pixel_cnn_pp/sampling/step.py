"""The network's computation at one image row (the u stream) or one pixel (the ul stream) on
the fast sampler's caches, in the model's plan: the layers, their order and short-cuts are
PixelCNNPP.passes', the gated ResNet's arithmetic nn.GatedResnet.residual's."""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.sampling.cache import Cache, read_center, read_window, write_block


class Op:
    """One layer of the plan on the caches: it reads `x` (and the short-cuts `aux`) and writes
    `out`; a gated resnet also keeps its f(conv1) map in `c1`. `level` is where it runs:
    at the positions of that level (a transposed convolution runs with its input's)."""

    def __init__(self, layer, x, aux, out, c1=None):
        self.layer, self.x, self.aux, self.out, self.c1 = layer, x, aux, out, c1
        self.stream, self.level = x.stream, max(x.level, out.level)


class CachedNetwork:
    """Every map of the network in a Cache of an (H + 1) x (W + 2) grid (at its level's size)
    with a zero border, one row above and a column each side, that is the padding of the
    shifted convolutions: position (r, c) of the map is the grid's (r + 1, c + 1). The ops
    are the plan's layers in its order (PixelCNNPP.passes run on caches); the u stream's run
    on whole rows (c None), the ul stream's at one position. `w` holds the weight-normalised
    weights, computed once per batch (start)."""

    def __init__(self, model, image_shape):
        H, W, C = image_shape
        self.image_shape, self.caches, self.ops = tuple(image_shape), [], []

        def cache(stream, level, channels):
            self.caches.append(Cache(stream, level, (H >> level) + 1, (W >> level) + 2, channels))
            return self.caches[-1]

        def gated_resnet(layer, x, *aux):
            out = cache(x.stream, x.level, x.channels)
            self.ops.append(Op(layer, x, aux, out, cache(x.stream, x.level, layer.conv2.V.shape[2])))
            return out

        def resample(layer, x):
            level = x.level + (1 if isinstance(layer, nn.Conv2d) else -1)  # stride 2, or transposed
            out = cache(x.stream, level, x.channels)
            self.ops.append(Op(layer, x, (), out))
            return out

        F = model.nr_filters
        self.x_pad = cache('x', 0, C + 1)
        self.ul_in_down = cache('ul', 0, F)
        self.u, self.ul = cache('u', 0, F), cache('ul', 0, F)
        self.out = model.passes(self.u, self.ul, gated_resnet, resample)
        self.layers = model.weight_norm_layers()
        self.w = {layer.name: [tf.Variable(w, trainable=False) for w in layer.weights_now()] for layer in self.layers}

    def start(self, batch_size):
        """Empty caches for a batch of this size, and the model's weights as they are now."""
        for layer in self.layers:
            for var, value in zip(self.w[layer.name], layer.weights_now()):
                var.assign(value)
        for cache in self.caches:
            cache.var.assign(tf.zeros(tf.stack([cache.var.shape[0], batch_size, cache.channels])))
        inside = np.zeros((self.x_pad.rows + 1, self.x_pad.cols, 1, 1), np.float32)
        inside[1:-1, 1:-1] = 1.  # x_pad's last channel: 1 on the image, 0 on its border
        C = self.image_shape[2]
        self.x_pad.var[:, :, C:].assign(tf.broadcast_to(inside.reshape(-1, 1, 1),
                                                         tf.stack([inside.size, batch_size, 1])))

    def conv(self, layer, window, c):
        """The layer's output at the window's position (c given: one position, computed as
        a matmul of the flattened window, which on tiny inputs is several times faster
        than a convolution) or row (c None)."""
        if c is None:
            return layer.apply(window, self.w[layer.name], 'VALID')
        W, b = self.w[layer.name]
        flat = tf.reshape(window, [-1, np.prod(W.shape[:3])])
        return (tf.matmul(flat, tf.reshape(W, [-1, W.shape[-1]])) + b)[:, None, None, :]

    def inputs(self, model, stream, r, c):
        """The streams' first maps at row r (u, and the down-shifted part of ul) or at (r, c)
        (ul): model_spec's down_shift / right_shift of the input convolutions of x_pad."""
        if stream == 'u':  # down_shift: row r is the convolutions' row r - 1
            above = tf.cast(r > 0, tf.float32)
            write_block(self.u, r, None, above * self.conv(model.u_in, self.x_pad.read(tf.maximum(r - 1, 0), 2), None))
            write_block(self.ul_in_down, r, None, above * self.conv(model.ul_in_down, self.x_pad.read(r, 1), None))
        else:  # + right_shift: column c is the convolution's column c - 1
            right = self.conv(model.ul_in_right, self.x_pad.read(r, 2, c, 1), c)
            write_block(self.ul, r, c, read_center(self.ul_in_down, r, c) + right * tf.cast(c > 0, tf.float32))

    def run(self, op, r, c, h_terms):
        """Op at row r (c None) or position (r, c) of its level."""
        layer = op.layer
        if isinstance(layer, nn.GatedResnet):
            def conv2(c1):
                write_block(op.c1, r, c, c1)
                return self.conv(layer.conv2, read_window(op.c1, r, c), c)
            aux = [read_center(a, r, c) for a in op.aux]
            out = layer.residual(read_center(op.x, r, c), lambda f: self.conv(layer.conv1, f(read_window(op.x, r, c)), c),
                                 conv2, lambda a: layer.nin_aux.apply(a, self.w[layer.nin_aux.name]),
                                 tf.concat(aux, 3) if len(aux) > 1 else (aux or [None])[0], h_terms.get(layer.hw_name))
            write_block(op.out, r, c, out)
        elif isinstance(layer, nn.CroppedDeconv2d):  # writes its 2-row (u) or 2 x 2 (ul) block below
            out = layer.apply(read_center(op.x, r, c), self.w[layer.name])
            width = self.image_shape[1] >> op.x.level if c is None else 1
            out = out[:, :2, layer.crop[0]:layer.crop[0] + 2 * width]
            write_block(op.out, 2 * r, None if c is None else 2 * c, out)
        else:  # stride-2 convolution
            write_block(op.out, r, c, self.conv(layer, read_window(op.x, r, c, stride=2), c))

    def head(self, model, i, j):
        """The network's output at pixel (i, j): the mixture parameters l, (B, 1, 1, P)."""
        return model.head[0].apply(tf.nn.elu(read_center(self.out, i, j)), self.w[model.head[0].name])

    def put_pixel(self, i, j, pixel):
        """Writes pixel (B, 1, 1, C), scaled to [-1, 1], at (i, j) of x_pad."""
        write_block(self.x_pad, i, j, tf.concat([pixel, tf.ones_like(pixel[..., :1])], 3))

    def result(self):
        H, W, C = self.image_shape
        return self.x_pad.read(1, H, 1, W)[..., :C]
