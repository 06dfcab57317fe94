"""The network's computation at one image row (the u stream) or one pixel (the ul stream) on
the fast sampler's caches, in the model's plan: the layers, their order and short-cuts are
those of the model's plan.passes, the gated ResNet's arithmetic nn.GatedResnet.residual's.

A ul layer's 2x2 window at (r, c) is its input's row r - 1 (columns c - 1, c), known when
row r starts, and row r (c - 1, computed a step before, and c, this step). So each row
starts with one product per ul layer over the row above (with the u stream's short-cut
terms and the conditioning), for all its columns at once (Row); a pixel's step then
multiplies only the window's bottom row: half the weights a pixel reads, the rest in
matrices as wide as the image. The u stream's 2-row convolutions run a kernel row on each
map row, so that its maps are read and written as they are stored."""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.sampling.cache import CellCache, Row, RowCache

_BLOCK = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.int32)  # a 2 x 2 block's grid offsets


class Op:
    """One layer of the plan on the caches: it reads `x` (and the short-cuts `aux`) and writes
    `out`; a gated resnet also keeps its f(conv1) map in `c1`. `level` is where it runs:
    at the positions of that level (a transposed convolution runs with its input's). A ul
    op's terms from the row above are in its Rows `p1` (conv1, with the u stream's
    short-cut, or the stride-2 convolution) and `p2` (conv2, with the conditioning)."""

    def __init__(self, layer, x, aux, out, c1=None):
        self.layer, self.x, self.aux, self.out, self.c1 = layer, x, aux, out, c1
        self.stream, self.level = x.stream, max(x.level, out.level)
        self.p1 = self.p2 = None


def _weights(model, layers, ops):
    """{key: the weights the steps use}: each layer's weights_now() by (name, index); the
    u stream's 2-row kernels by row, (name, 'r0'), (name, 'r1'); the ul stream's as
    matrices of their top and bottom rows, (name, 'top'), (name, 'bottom'); a ul block's
    short-cut weights split into the u stream's rows and the ul stream's."""
    out = {}
    for layer in layers:
        for k, value in enumerate(layer.weights_now()):
            out[layer.name, k] = value

    def rows(layer):
        W = out[layer.name, 0]
        out[layer.name, 'r0'], out[layer.name, 'r1'] = W[:1], W[1:]

    def matrices(layer):
        W = out[layer.name, 0]
        out[layer.name, 'top'] = tf.reshape(W[0], [-1, W.shape[-1]])
        if W.shape[0] == 2:
            out[layer.name, 'bottom'] = tf.reshape(W[1], [-1, W.shape[-1]])
    rows(model.u_in)
    matrices(model.ul_in_down)
    matrices(model.ul_in_right)
    for op in ops:
        convs = (op.layer.conv1, op.layer.conv2) if op.c1 else (op.layer,)
        for conv in convs if not isinstance(op.layer, nn.CroppedDeconv2d) else ():
            (rows if op.stream == 'u' else matrices)(conv)
        if op.stream == 'ul' and len(op.aux) == 2:  # nin(f([u, ul])): f(u)'s rows and f(ul)'s
            nin = op.layer.nin_aux.name
            V, scale = out[nin, 0], out[nin, 1]
            parts = tf.split(V, 2 * (2 if op.layer.nonlinearity is nn.concat_elu else 1))
            out[nin, 'u'] = tf.concat(parts[0::2], 0) * scale
            out[nin, 'ul'] = tf.concat(parts[1::2], 0) * scale
    return out


def _times(x, w):
    """x (..., K) @ w (K, N), as one 2-D product (tensordot's shape logic costs a dozen graph
    nodes a call)."""
    return tf.reshape(tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), w), [d or -1 for d in x.shape[:-1]] + [w.shape[-1]])


class CachedNetwork:
    """Every map of the network in a cache (cache.py): the u stream's in RowCaches, the ul
    stream's and the image's in CellCaches. The ops are the plan's layers in its order
    (PixelCNNPP.plan.passes run on caches). `w` holds the weight-normalised weights and the
    parts of them the steps multiply, computed once per batch (start)."""

    def __init__(self, model, image_shape):
        H, W, C = image_shape
        self.image_shape, self.caches, self.ops = tuple(image_shape), [], []

        def cache(stream, level, channels):
            kind = RowCache if stream == 'u' else CellCache
            self.caches.append(kind(stream, level, (H >> level) + 1, (W >> level) + 2, channels))
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
        self.u, self.ul = cache('u', 0, F), cache('ul', 0, F)
        self.out = model.plan.passes(self.u, self.ul, gated_resnet, resample)
        self.p_in = Row(W, F)  # ul's first map, but for its pixel's left neighbour
        self.l_row = Row(W, model.head[0].num_units)  # the network's output along the row
        self.rows = [self.p_in]
        for op in self.ops:
            if op.stream == 'ul' and not isinstance(op.layer, nn.CroppedDeconv2d):
                op.p1 = Row(W >> op.level, F)
                op.p2 = Row(W >> op.level, 2 * F) if op.c1 else None
                self.rows += [op.p1] + ([op.p2] if op.p2 else [])
        self.layers = model.weight_norm_layers()
        self.w = {k: tf.Variable(v, trainable=False) for k, v in _weights(model, self.layers, self.ops).items()}

    def start(self, model, batch_size):
        """Empty caches for a batch of this size, and the model's weights as they are now."""
        for k, value in _weights(model, self.layers, self.ops).items():
            self.w[k].assign(value)
        for cache in self.caches + [self.l_row]:
            cache.zero(batch_size)
        C = self.image_shape[2]
        inside = tf.pad(tf.ones([self.x_pad.rows - 1, self.x_pad.cols - 2]), [[1, 1], [1, 1]])
        # x_pad's last channel: 1 on the image, 0 on its border
        self.x_pad.var[:, :, :, C:].assign(tf.broadcast_to(
            inside[:, :, None, None], tf.stack([self.x_pad.rows + 1, self.x_pad.cols, batch_size, 1])))

    def _dense(self, layer):
        return [self.w[layer.name, k] for k in range(3)]

    def _conv_rows(self, layer, above, row):
        """A 2-row convolution of grid rows (B, 1, cols, C): each kernel row on its row."""
        strides = (1,) + layer.stride + (1,)
        return tf.nn.bias_add(tf.nn.conv2d(above, self.w[layer.name, 'r0'], strides, 'VALID'), self.w[layer.name, 1]) + \
            tf.nn.conv2d(row, self.w[layer.name, 'r1'], strides, 'VALID')

    # The u stream: whole rows.

    def u_inputs(self, model, i):
        """The u stream's first map at row i: model_spec's down_shift of u_in(x_pad), whose
        row i is the convolution's row i - 1."""
        def row(g):
            return tf.transpose(self.x_pad.row(g), [1, 0, 2])[:, None]
        g = tf.maximum(i - 1, 0)
        self.u.put_row(i, tf.cast(i > 0, tf.float32) * self._conv_rows(model.u_in, row(g), row(g + 1)))

    def run_row(self, op, r, h_terms):
        """A u op at row r of its level."""
        layer = op.layer
        if isinstance(layer, nn.GatedResnet):
            above, row = op.x.row(r), op.x.row(r + 1)

            def conv2(c1):
                op.c1.put_row(r, c1)
                return self._conv_rows(layer.conv2, op.c1.row(r), tf.pad(c1, [[0, 0], [0, 0], [1, 1], [0, 0]]))
            out = layer.residual(row[:, :, 1:-1], lambda f: self._conv_rows(layer.conv1, f(above), f(row)), conv2,
                                 lambda a: layer.nin_aux.apply(a, self._dense(layer.nin_aux)),
                                 op.aux[0].row(r + 1)[:, :, 1:-1] if op.aux else None, h_terms.get(layer.hw_name))
            op.out.put_row(r, out)
        elif isinstance(layer, nn.CroppedDeconv2d):  # writes its rows 2r and 2r + 1 below
            out = layer.apply(op.x.row(r + 1)[:, :, 1:-1], [self.w[layer.name, k] for k in range(2)])
            out = out[:, :2, layer.crop[0]:layer.crop[0] + 2 * (self.image_shape[1] >> op.x.level)]
            op.out.put_row(2 * r, out[:, :1])
            op.out.put_row(2 * r + 1, out[:, 1:])
        else:  # stride-2 convolution: the input's rows 2r - 1 and 2r
            op.out.put_row(r, self._conv_rows(layer, op.x.row(2 * r), op.x.row(2 * r + 1)))

    # The ul stream: what a row's pixels share, then one position per step.

    def ul_inputs_row(self, model, i):
        """ul's first map at row i, but for the bottom cell of ul_in_right's window: model_spec's
        down_shift(ul_in_down(x_pad)) + right_shift(ul_in_right(x_pad)), whose column j is
        the convolution's j - 1 (0 at j = 0)."""
        W = self.image_shape[1]
        above = self.x_pad.row(i)  # x_pad's row i - 1
        down = tf.concat([above[t:t + W] for t in range(3)], -1)
        down = _times(down, self.w[model.ul_in_down.name, 'top']) + self.w[model.ul_in_down.name, 1]
        right = _times(above[:W], self.w[model.ul_in_right.name, 'top']) + self.w[model.ul_in_right.name, 1]
        self.p_in.put(tf.cast(i > 0, tf.float32) * down + right * tf.pad(tf.ones([W - 1, 1, 1]), [[1, 0], [0, 0], [0, 0]]))

    def ul_row(self, op, r, h_terms):
        """A ul op's terms from the row above at row r of its level (Row p1, p2)."""
        layer, width = op.layer, self.image_shape[1] >> op.level

        def top(conv, row, stride=1):
            taps = tf.concat([row[t:t + stride * width:stride] for t in range(2)], -1)
            return _times(taps, self.w[conv.name, 'top']) + self.w[conv.name, 1]
        if op.c1 is None:  # stride 2: the input's row 2r - 1
            op.p1.put(top(layer, op.x.row(2 * r), 2))
            return
        f, nin = layer.nonlinearity, layer.nin_aux
        u = f(op.aux[0].row(r + 1)[:, 0, 1:-1])  # the u stream's short-cut, row r, (B, W, C)
        V, scale, b = self._dense(nin)  # Dense.apply's arithmetic, on f(u)'s rows only if [u, ul]
        u = _times(u, V) * scale + b if len(op.aux) == 1 else _times(u, self.w[nin.name, 'u']) + b
        op.p1.put(top(layer.conv1, f(op.x.row(r))) + tf.transpose(u, [1, 0, 2]))
        p2 = top(layer.conv2, op.c1.row(r))
        op.p2.put(p2 if layer.hw_name not in h_terms else p2 + h_terms[layer.hw_name][:, 0, 0])

    @staticmethod
    def positions(i, j, levels, slab=False):
        """{level: (grid index of the position at (i, j), of its left neighbour)}; in a slab
        the position's row is slab row 1."""
        out = {}
        for L in range(levels):
            at = tf.stack([1 if slab else i // 2 ** L + 1, j // 2 ** L + 1])
            out[L] = (at, at - [0, 1])
        return out

    def ul_inputs(self, model, j, pos, fresh):
        at, left = pos[0]
        ul = self.p_in.cell(j) + tf.matmul(self.x_pad.cell(left), self.w[model.ul_in_right.name, 'bottom'])
        self.ul.put_cells(at, ul)
        fresh[self.ul] = ul

    def ul_step(self, op, c, pos, fresh):
        """A ul op at column c of its level; pos: positions(); fresh: the maps' values at this
        step's positions computed so far (else read from the caches)."""
        layer, (at, left) = op.layer, pos[op.x.level]

        def x_at():
            return fresh[op.x] if op.x in fresh else op.x.cell(at)

        if isinstance(layer, nn.CroppedDeconv2d):  # writes its 2 x 2 block below
            out = layer.apply(x_at()[:, None, None], [self.w[layer.name, k] for k in range(2)])
            out = tf.transpose(out[:, :2, layer.crop[0]:layer.crop[0] + 2], [1, 2, 0, 3])
            op.out.put_cells(pos[op.out.level][0] + _BLOCK, tf.reshape(out, [4, -1, out.shape[-1]]))
            return
        if op.c1 is None:  # stride 2: the input's (2r, 2c - 1) and (2r, 2c)
            window = tf.concat([op.x.cell(left), x_at()], -1)
            out = op.p1.cell(c) + tf.matmul(window, self.w[layer.name, 'bottom'])
            at = pos[op.level][0]
        else:
            x = x_at()

            def conv1(f):
                window = tf.concat([f(op.x.cell(left)), f(x)], -1)
                return op.p1.cell(c) + tf.matmul(window, self.w[layer.conv1.name, 'bottom'])

            def conv2(c1):
                op.c1.put_cells(at, c1)
                window = tf.concat([op.c1.cell(left), c1], -1)
                return op.p2.cell(c) + tf.matmul(window, self.w[layer.conv2.name, 'bottom'])
            nin = layer.nin_aux.name
            shortcut = None if len(op.aux) < 2 else fresh[op.aux[1]] if op.aux[1] in fresh else op.aux[1].cell(at)
            out = layer.residual(x, conv1, conv2, lambda a: tf.matmul(a, self.w[nin, 'ul']), shortcut)
        op.out.put_cells(at, out)
        fresh[op.out] = out

    def head(self, model, pos, fresh):
        """The network's output at the pixel: the mixture parameters l, (B, P)."""
        ul = fresh[self.out] if self.out in fresh else self.out.cell(pos[0][0])
        return model.head[0].apply(tf.nn.elu(ul), self._dense(model.head[0]))

    def put_pixel(self, pos, pixel):
        """Writes pixel (B, C), scaled to [-1, 1], to x_pad."""
        self.x_pad.put_cells(pos[0][0], tf.concat([pixel, tf.ones_like(pixel[:, :1])], 1))

    def result(self):
        H, W, C = self.image_shape
        return tf.transpose(self.x_pad.var[1:H + 1, 1:W + 1, :, :C], [2, 0, 1, 3])
