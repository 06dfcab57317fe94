"""The fast sampler's memory: each activation map of the network on a grid with a zero border
(one row above, a column each side: the padding of the shifted convolutions; position
(r, c) of the map is the grid's (r + 1, c + 1)), in the layout its readers need, and the
terms a row's pixels share (Row)."""

import tensorflow as tf


class RowCache:
    """A u-stream map, read and written a whole row at a time: a variable (rows, B, cols, C),
    so that a row is (B, 1, cols, C) as it is, without a transpose."""

    def __init__(self, stream, level, rows, cols, channels):
        self.stream, self.level, self.rows, self.cols, self.channels = stream, level, rows, cols, channels
        self.var = tf.Variable(tf.zeros([rows, 0, cols, channels]), trainable=False,
                               shape=[rows, None, cols, channels])

    def zero(self, batch_size):
        self.var.assign(tf.zeros(tf.stack([self.rows, batch_size, self.cols, self.channels])))

    def row(self, r):
        """Grid row r, (B, 1, cols, C)."""
        return tf.expand_dims(self.var.sparse_read(r), 1)

    def put_row(self, r, value):
        """Writes map row r: value (B, 1, cols - 2, C) between the border's zeros."""
        value = tf.pad(value[:, 0], [[0, 0], [1, 1], [0, 0]])
        tf.raw_ops.ResourceScatterUpdate(resource=self.var.handle, indices=r + 1, updates=value)


class CellCache:
    """A ul-stream map, or the image: read and written a position at a time by the pixels'
    steps, and a row at a time when a row starts: a variable (rows + 1, cols, B, C) (the
    extra row: every row of the map starts a slab). Positions are given as grid indices
    [row, column] (the step computes them once per level).

    While a row's pixels run compiled by XLA (which takes no sparse reads or writes of
    variables), the cache reads and writes a slab instead: grid rows base .. base + 2 as a
    tensor (3, cols, B, C), passed in and out of the compiled loop; the map row being
    computed is then slab row 1."""

    def __init__(self, stream, level, rows, cols, channels):
        self.stream, self.level, self.rows, self.cols, self.channels = stream, level, rows, cols, channels
        self.var = tf.Variable(tf.zeros([rows + 1, cols, 0, channels]), trainable=False,
                               shape=[rows + 1, cols, None, channels])
        self.slab = None
        self.written = False

    def zero(self, batch_size):
        self.var.assign(tf.zeros(tf.stack([self.rows + 1, self.cols, batch_size, self.channels])))

    def cell(self, index):
        """The position at grid index [row, column], (B, C)."""
        if self.slab is not None:
            return tf.gather_nd(self.slab, index)
        return tf.raw_ops.ResourceGatherNd(resource=self.var.handle, indices=index, dtype=self.var.dtype)

    def put_cells(self, index, value):
        """Writes value (B, C) at grid index [row, column], or (n, B, C) at (n, 2)."""
        if index.shape.rank == 1:
            index, value = index[None], value[None]
        if self.slab is not None:
            self.written = True
            self.slab = tf.tensor_scatter_nd_update(self.slab, index, value)
            return
        tf.raw_ops.ResourceScatterNdUpdate(ref=self.var.handle, indices=index, updates=value)

    def row(self, r):
        """Grid row r, (cols, B, C)."""
        return self.var.sparse_read(r)

    def load_slab(self, base):
        return self.var.sparse_read(base + tf.range(3))

    def store_slab(self, base, slab):
        tf.raw_ops.ResourceScatterUpdate(resource=self.var.handle, indices=base + tf.range(3), updates=slab)


class Row:
    """What the steps of one row of a level share, computed once at the row's start: a
    variable (cols, B, C) read by column (`value`, a tensor, instead while XLA's loop runs)."""

    def __init__(self, cols, channels):
        self.var = tf.Variable(tf.zeros([cols, 0, channels]), trainable=False, shape=[cols, None, channels])
        self.value = None

    def put(self, value):
        """value (cols, B, C)."""
        self.var.assign(value)

    def cell(self, c):
        return self.var.sparse_read(c) if self.value is None else tf.gather(self.value, c)

    def zero(self, batch_size):
        self.var.assign(tf.zeros(tf.stack([self.var.shape[0], batch_size, self.var.shape[2]])))

    def put_cell(self, c, value):
        tf.raw_ops.ResourceScatterUpdate(resource=self.var.handle, indices=c, updates=value)
