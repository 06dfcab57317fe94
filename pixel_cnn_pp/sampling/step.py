"""The network's computation at one image row (the u stream) or one pixel (the ul stream) on
the fast sampler's caches, in the model's plan: the layers, their order and short-cuts are
PixelCNNPP.passes', the gated ResNet's arithmetic nn.GatedResnet.residual's.

A ul layer's 2x2 window at (r, c) is its input's row r - 1 (columns c - 1, c), known when
row r starts, and row r (c - 1, computed a step before, and c, this step). So each row
starts with one convolution per ul layer over the row above (and the u stream's short-cut
terms, and the conditioning), for all its columns at once (Row); a pixel's step then
multiplies only the window's bottom row: half the weights a pixel reads, the rest in
matrices as wide as the image."""

import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.sampling.cache import Cache, Row, read_center, read_window, write_block


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


def _bottom(kernel):
    """A 2-row kernel's bottom row as a matrix: (kw * C_in, C_out)."""
    return tf.reshape(kernel[-1], [-1, kernel.shape[-1]])


def _widen(layer):
    return 2 if layer.nonlinearity is nn.concat_elu else 1


class CachedNetwork:
    """Every map of the network in a Cache of an (H + 1) x (W + 2) grid (at its level's size)
    with a zero border, one row above and a column each side, that is the padding of the
    shifted convolutions: position (r, c) of the map is the grid's (r + 1, c + 1). The ops
    are the plan's layers in its order (PixelCNNPP.passes run on caches). `w` holds the
    weight-normalised weights and the parts of them a pixel's step multiplies, computed
    once per batch (start)."""

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
        self.u, self.ul = cache('u', 0, F), cache('ul', 0, F)
        self.out = model.passes(self.u, self.ul, gated_resnet, resample)
        self.p_in = Row(W, F)  # ul's first map, but for its pixel's left neighbour
        self.rows = [self.p_in]
        for op in self.ops:
            if op.stream == 'ul' and not isinstance(op.layer, nn.CroppedDeconv2d):
                op.p1 = Row(W >> op.level, F)
                op.p2 = Row(W >> op.level, 2 * F) if op.c1 else None
                self.rows += [op.p1] + ([op.p2] if op.p2 else [])
        self.layers = model.weight_norm_layers()
        self.w = {k: tf.Variable(v, trainable=False) for k, v in self._weights(model).items()}

    def _weights(self, model):
        """{name: the weights the steps use}: each layer's weights_now(), the bottom rows of
        the ul convolutions' kernels, and a ul block's short-cut weights split into the u
        stream's rows and the ul stream's."""
        out = {}
        for layer in self.layers:
            for k, value in enumerate(layer.weights_now()):
                out[layer.name, k] = value
        out['right', 'bottom'] = _bottom(out[model.ul_in_right.name, 0])
        for op in self.ops:
            if op.stream != 'ul' or isinstance(op.layer, nn.CroppedDeconv2d):
                continue
            convs = (op.layer.conv1, op.layer.conv2) if op.c1 else (op.layer,)
            for conv in convs:
                out[conv.name, 'bottom'] = _bottom(out[conv.name, 0])
            if len(op.aux) == 2:  # nin(f([u, ul])): f(u)'s rows and f(ul)'s
                nin = op.layer.nin_aux.name
                V, scale = out[nin, 0], out[nin, 1]
                rows = tf.split(V, 2 * _widen(op.layer))
                out[nin, 'u'] = tf.concat(rows[0::2], 0) * scale
                out[nin, 'ul'] = tf.concat(rows[1::2], 0) * scale
        return out

    def start(self, model, batch_size):
        """Empty caches for a batch of this size, and the model's weights as they are now."""
        for k, value in self._weights(model).items():
            self.w[k].assign(value)
        for cache in self.caches:
            cache.var.assign(tf.zeros(tf.stack([cache.var.shape[0], batch_size, cache.channels])))
        C = self.image_shape[2]
        inside = tf.pad(tf.ones([self.x_pad.rows - 1, self.x_pad.cols - 2]), [[1, 1], [1, 1]])
        # x_pad's last channel: 1 on the image, 0 on its border
        self.x_pad.var[:, :, C:].assign(tf.broadcast_to(tf.reshape(inside, [-1, 1, 1]),
                                                         tf.stack([tf.size(inside), batch_size, 1])))

    def conv(self, layer, window, kernel=None):
        """The layer's VALID convolution of a window (B, rows, cols, C) with its weights (or
        `kernel`'s rows of them)."""
        W, b = self.w[layer.name, 0], self.w[layer.name, 1]
        return layer.apply(window, (W if kernel is None else W[kernel], b), 'VALID')

    # The u stream: whole rows.

    def u_inputs(self, model, r):
        """The u stream's first map at row r: model_spec's down_shift of u_in(x_pad), whose
        row r is the convolution's row r - 1."""
        write_block(self.u, r, None, tf.cast(r > 0, tf.float32) * self.conv(model.u_in, self.x_pad.read(
            tf.maximum(r - 1, 0), 2)))

    def run_row(self, op, r, h_terms):
        """A u op at row r of its level."""
        layer = op.layer
        if isinstance(layer, nn.GatedResnet):
            def conv2(c1):
                write_block(op.c1, r, None, c1)
                return self.conv(layer.conv2, read_window(op.c1, r, None))
            aux = [read_center(a, r, None) for a in op.aux]
            out = layer.residual(read_center(op.x, r, None),
                                 lambda f: self.conv(layer.conv1, f(read_window(op.x, r, None))), conv2,
                                 lambda a: layer.nin_aux.apply(a, self._dense(layer.nin_aux)),
                                 aux[0] if aux else None, h_terms.get(layer.hw_name))
            write_block(op.out, r, None, out)
        elif isinstance(layer, nn.CroppedDeconv2d):  # writes its rows 2r and 2r + 1 below
            out = layer.apply(read_center(op.x, r, None), self._conv_weights(layer))
            width = self.image_shape[1] >> op.x.level
            write_block(op.out, 2 * r, None, out[:, :2, layer.crop[0]:layer.crop[0] + 2 * width])
        else:  # stride-2 convolution
            write_block(op.out, r, None, self.conv(layer, read_window(op.x, r, None, stride=2)))

    def _dense(self, layer):
        return [self.w[layer.name, k] for k in range(3)]

    def _conv_weights(self, layer):
        return [self.w[layer.name, k] for k in range(2)]

    # The ul stream: what a row's pixels share, then one position per step.

    def ul_inputs_row(self, model, i):
        """ul's first map at row i, but for the bottom cell of ul_in_right's window: model_spec's
        down_shift(ul_in_down(x_pad)) + right_shift(ul_in_right(x_pad)), whose column j is
        the convolution's j - 1 (0 at j = 0)."""
        W = self.image_shape[1]
        above = self.x_pad.read(i, 1)  # x_pad's row i - 1
        down = tf.cast(i > 0, tf.float32) * self.conv(model.ul_in_down, above)
        right = self.conv(model.ul_in_right, above, kernel=slice(0, 1))[:, :, :W]
        self.p_in.put(down + right * tf.pad(tf.ones([1, 1, W - 1, 1]), [[0, 0], [0, 0], [1, 0], [0, 0]]))

    def ul_row(self, op, r, h_terms):
        """A ul op's terms from the row above at row r of its level (Row p1, p2)."""
        layer, width = op.layer, self.image_shape[1] >> op.level
        if op.c1 is None:  # stride 2: the input's row 2r - 1
            op.p1.put(self.conv(layer, op.x.read(2 * r, 1), kernel=slice(0, 1))[:, :, :width])
            return
        f = layer.nonlinearity
        p1 = self.conv(layer.conv1, f(op.x.read(r, 1)), kernel=slice(0, 1))[:, :, :width]
        u = op.aux[0].read(r + 1, 1, 1, width)  # the u stream's short-cut, row r
        if len(op.aux) == 1:
            p1 += layer.nin_aux.apply(f(u), self._dense(layer.nin_aux))
        else:
            p1 += tf.tensordot(f(u), self.w[layer.nin_aux.name, 'u'], 1) + self.w[layer.nin_aux.name, 2]
        op.p1.put(p1)
        p2 = self.conv(layer.conv2, op.c1.read(r, 1), kernel=slice(0, 1))[:, :, :width]
        op.p2.put(p2 if layer.hw_name not in h_terms else p2 + h_terms[layer.hw_name])

    def ul_inputs(self, model, i, j, fresh):
        ul = self.p_in.cell(j) + tf.matmul(self.x_pad.cell(i, j - 1), self.w['right', 'bottom'])
        self.ul.put_cell(i, j, ul)
        fresh[self.ul] = ul

    def ul_step(self, op, r, c, fresh):
        """A ul op at position (r, c) of its level; `fresh`: the maps' values at this step's
        positions computed so far (else read from the caches)."""
        layer = op.layer

        def at(cache, r, c):
            return fresh[cache] if cache in fresh else cache.cell(r, c)

        if isinstance(layer, nn.CroppedDeconv2d):  # writes its 2 x 2 block below
            out = layer.apply(at(op.x, r, c)[:, None, None], self._conv_weights(layer))
            write_block(op.out, 2 * r, 2 * c, out[:, :2, layer.crop[0]:layer.crop[0] + 2])
            return
        if op.c1 is None:  # stride 2: the input's (2r, 2c - 1) and (2r, 2c)
            window = tf.concat([op.x.cell(2 * r, 2 * c - 1), at(op.x, 2 * r, 2 * c)], -1)
            out = op.p1.cell(c) + tf.matmul(window, self.w[layer.name, 'bottom'])
        else:
            x, left = at(op.x, r, c), op.x.cell(r, c - 1)

            def conv1(f):
                return op.p1.cell(c) + tf.matmul(tf.concat([f(left), f(x)], -1), self.w[layer.conv1.name, 'bottom'])

            def conv2(c1):
                op.c1.put_cell(r, c, c1)
                window = tf.concat([op.c1.cell(r, c - 1), c1], -1)
                return op.p2.cell(c) + tf.matmul(window, self.w[layer.conv2.name, 'bottom'])
            nin = layer.nin_aux.name
            out = layer.residual(x, conv1, conv2, lambda a: tf.matmul(a, self.w[nin, 'ul']),
                                 at(op.aux[1], r, c) if len(op.aux) == 2 else None)
        op.out.put_cell(r, c, out)
        fresh[op.out] = out

    def head(self, model, i, j):
        """The network's output at pixel (i, j): the mixture parameters l, (B, P)."""
        return model.head[0].apply(tf.nn.elu(self.out.cell(i, j)), self._dense(model.head[0]))

    def put_pixel(self, i, j, pixel):
        """Writes pixel (B, C), scaled to [-1, 1], at (i, j) of x_pad."""
        self.x_pad.put_cell(i, j, tf.concat([pixel, tf.ones_like(pixel[:, :1])], 1))

    def result(self):
        H, W, C = self.image_shape
        return self.x_pad.read(1, H, 1, W)[..., :C]
