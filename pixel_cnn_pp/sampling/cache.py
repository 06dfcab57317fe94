"""The fast sampler's memory: each activation map of the network in a cache that a pixel's
step reads and writes at only the positions it needs, and the terms of a row that its
pixels' steps share (Row)."""

import tensorflow as tf


class Cache:
    """One activation map of the fast sampler (of `stream`, 'u' or 'ul', at `level`), stored
    position first: a variable of shape (rows * cols, B, C) whose entry r * cols + c is position (r, c) of every image, so that a
    pixel's step reads and writes only the positions it needs (slicing the variable itself
    would read, and copy, the whole map). The variable has one more row than the map, so
    that every row of the map starts a slab.

    While a row's pixels run (compiled by XLA, which takes no sparse reads or writes of
    variables), the cache reads and writes a slab instead: rows base .. base + 2 of the
    map as a tensor (3, cols, B, C), passed in and out of the compiled loop."""

    def __init__(self, stream, level, rows, cols, channels):
        self.stream, self.level, self.rows, self.cols, self.channels = stream, level, rows, cols, channels
        self.var = tf.Variable(tf.zeros([(rows + 1) * cols, 0, channels]), trainable=False,
                               shape=[(rows + 1) * cols, None, channels])
        self.slab = self.base = None
        self.written = False

    def _index(self, r, nr, c, nc):
        return tf.reshape((r + tf.range(nr))[:, None] * self.cols + (c + tf.range(nc))[None, :], [-1])

    def read(self, r, nr, c=0, nc=None):
        """Rows r .. r + nr - 1, columns c .. c + nc - 1 (default: all) as (B, nr, nc, C)."""
        nc = self.cols if nc is None else nc
        if self.slab is not None:
            # gathers, not tf.slice: XLA would compile a slice's start in, once per row
            values = tf.gather(tf.gather(self.slab, r - self.base + tf.range(nr)), c + tf.range(nc), axis=1)
            return tf.transpose(values, [2, 0, 1, 3])
        values = self.var.sparse_read(self._index(r, nr, c, nc))
        return tf.transpose(tf.reshape(values, [nr, nc, -1, self.channels]), [2, 0, 1, 3])

    def cell(self, r, c):
        """Position (r, c) of the map (-1: the zero border) as (B, C)."""
        if self.slab is not None:
            return tf.gather(tf.gather(self.slab, r + 1 - self.base), c + 1)
        return self.var.sparse_read((r + 1) * self.cols + c + 1)

    def put_cell(self, r, c, value):
        """Writes value (B, C) at position (r, c)."""
        if self.slab is not None:
            self.written = True
            self.slab = tf.tensor_scatter_nd_update(self.slab, [[r + 1 - self.base, c + 1]], value[None])
            return
        self.var.scatter_update(tf.IndexedSlices(value[None], tf.reshape((r + 1) * self.cols + c + 1, [1])))

    def put(self, r, c, value):
        """Writes value (B, nr, nc, C) at rows r.., columns c.."""
        if self.slab is not None:
            self.written = True
            nr, nc = tf.unstack(tf.shape(value)[1:3])
            rows, cols = tf.meshgrid(r - self.base + tf.range(nr), c + tf.range(nc), indexing='ij')
            self.slab = tf.tensor_scatter_nd_update(self.slab, tf.stack([rows, cols], 2),
                                                    tf.transpose(value, [1, 2, 0, 3]))
            return
        shape = tf.shape(value)
        values = tf.reshape(tf.transpose(value, [1, 2, 0, 3]), [-1, shape[0], self.channels])
        self.var.scatter_update(tf.IndexedSlices(values, self._index(r, shape[1], c, shape[2])))

    def load_slab(self, i):
        """The slab of image row i: the map's rows i // 2^level .. + 2."""
        base = i // 2 ** self.level
        return tf.reshape(self.var.sparse_read(self._index(base, 3, 0, self.cols)), [3, self.cols, -1, self.channels])

    def store_slab(self, i, slab):
        base = i // 2 ** self.level
        self.var.scatter_update(tf.IndexedSlices(tf.reshape(slab, [3 * self.cols, -1, self.channels]),
                                                 self._index(base, 3, 0, self.cols)))

    def use_slab(self, i, slab):
        """Reads and writes go to slab (None: back to the variable)."""
        self.slab, self.base = slab, None if slab is None else i // 2 ** self.level


def read_window(cache, r, c, stride=1):
    """The 2-row (and for a position, 2-column) input window of the output at (r, c) of a
    shifted convolution with this stride; c None means the whole row (all columns, with
    the zero border the down-shifted 2x3 kernels pad with)."""
    return cache.read(stride * r, 2) if c is None else cache.read(stride * r, 2, stride * c, 2)


def read_center(cache, r, c):
    return cache.read(r + 1, 1, 1, cache.cols - 2) if c is None else cache.read(r + 1, 1, c + 1, 1)


def write_block(cache, r, c, value):
    """Writes value to the block at (r, c) (c None: to whole rows, with the zero border)."""
    if c is None:
        cache.put(r + 1, 0, tf.pad(value, [[0, 0], [0, 0], [1, 1], [0, 0]]))
    else:
        cache.put(r + 1, c + 1, value)


class Row:
    """What the steps of one row of a level share, computed once at the row's start: a
    variable (cols, B, C) read by column (`value`, a tensor, instead while XLA's loop runs)."""

    def __init__(self, cols, channels):
        self.var = tf.Variable(tf.zeros([cols, 0, channels]), trainable=False, shape=[cols, None, channels])
        self.value = None

    def put(self, value):
        """value (B, 1, cols, C)."""
        self.var.assign(tf.transpose(value[:, 0], [1, 0, 2]))

    def cell(self, c):
        return self.var.sparse_read(c) if self.value is None else tf.gather(self.value, c)
