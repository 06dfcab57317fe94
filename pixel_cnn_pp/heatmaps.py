"""Per-pixel bits as pictures that compare (the heat maps of score.py): every map of a run on one
fixed colour scale of bits per sub-pixel (0 to max_bits, 8 by default: a uniform guess of a
sub-pixel's 256 values costs 8 bits), black (few) through red to yellow (max_bits or more),
each image beside its map, many per grid, and the scale drawn under the grid as a colour bar
with its tick values. NumPy only."""

import numpy as np

MAX_BITS = 8.
COLS, PER_FILE = 8, 96  # images per grid row, per file

# A 3x5 bitmap font for the legend: the digits and the letters of its caption (lower case:
# the letters without ascenders start a row lower).
_FONT = {c: [row for row in rows.split()] for c, rows in {
    '0': '### #.# #.# #.# ###', '1': '.#. ##. .#. .#. ###', '2': '### ..# ### #.. ###',
    '3': '### ..# ### ..# ###', '4': '#.# #.# ### ..# ..#', '5': '### #.. ### ..# ###',
    '6': '### #.. ### #.# ###', '7': '### ..# ..# ..# ..#', '8': '### #.# ### #.# ###',
    '9': '### #.# ### ..# ###', '.': '... ... ... ... .#.', '+': '... .#. ### .#. ...',
    '-': '... ... ### ... ...', ' ': '... ... ... ... ...', 'b': '#.. #.. ### #.# ###',
    'i': '.#. ... .#. .#. .#.', 't': '.#. ### .#. .#. ..#', 's': '... .## #.. ..# ##.',
    'p': '... ### #.# ### #..', 'e': '... .#. #.# ##. .##', 'r': '... #.# ##. #.. #..',
    'u': '... #.# #.# #.# ###', 'x': '... #.# .#. #.# ...', 'l': '##. .#. .#. .#. .#.'}.items()}
CAPTION = 'bits per sub-pixel'


def colour(bits, max_bits=MAX_BITS):
    """Bits per sub-pixel (any shape) as RGB uint8 (shape + (3,)) on the fixed scale:
    0 black, max_bits / 2 red, max_bits and above yellow."""
    t = np.clip(np.asarray(bits, np.float64) / max_bits, 0., 1.)
    rgb = np.stack([np.clip(2 * t, 0, 1), np.clip(2 * t - 1, 0, 1), np.zeros_like(t)], -1)
    return np.round(rgb * 255).astype(np.uint8)


def _text(canvas, text, y, x, value=0):
    """Draws text into canvas (H, W, 3) with its top-left corner at (y, x)."""
    for k, char in enumerate(text):
        glyph = np.array([[c == '#' for c in row] for row in _FONT[char]])
        canvas[y:y + 5, x + 4 * k:x + 4 * k + 3][glyph] = value


def _legend(width, max_bits):
    """The colour bar (200 px, or the width available) with ticks and values at 0, 1/4,
    1/2, 3/4 and all of the scale (the last one with a + : the colour of anything above)
    and the caption, as a white RGB strip `width` wide."""
    bar = max(min(200, width - 16), 40)
    canvas = np.full((32, max(width, bar + 16, 8 + 4 * len(CAPTION)), 3), 255, np.uint8)
    x0 = 4
    canvas[4:12, x0:x0 + bar] = colour(np.linspace(0., max_bits, bar), max_bits)[None]
    for k in range(5):
        value = max_bits * k / 4
        x = x0 + int(round(k / 4 * (bar - 1)))
        canvas[12:14, x] = 0
        label = '%g' % value + ('+' if k == 4 else '')
        _text(canvas, label, 15, max(x - 2 * len(label) + 1, 0))
    _text(canvas, CAPTION, 23, x0)
    return canvas


def grid(images, bits, max_bits=MAX_BITS, cols=COLS, zoom=1):
    """One picture: each uint8 image (N, H, W, C) beside its map of bits per sub-pixel
    (N, H, W) on the fixed scale, `cols` pairs a row, the legend underneath; every pixel
    scaled up `zoom` times."""
    images = np.asarray(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, H, W, _ = images.shape
    cell_w, cell_h = 2 * W + 1 + 2, H + 2  # image, 1 px, map, 2 px apart
    rows = -(-n // cols)
    width = min(n, cols) * cell_w
    canvas = np.full((rows * cell_h, width, 3), 255, np.uint8)
    for k in range(n):
        y, x = (k // cols) * cell_h, (k % cols) * cell_w
        canvas[y:y + H, x:x + W] = images[k]
        canvas[y:y + H, x + W + 1:x + 2 * W + 1] = colour(bits[k], max_bits)
    legend = _legend(width, max_bits)
    if legend.shape[1] > width:
        canvas = np.pad(canvas, [(0, 0), (0, legend.shape[1] - width), (0, 0)], constant_values=255)
    canvas = np.concatenate([canvas, legend])
    return np.repeat(np.repeat(canvas, zoom, axis=0), zoom, axis=1)


def default_zoom(image_shape):
    """Small images scaled up to about 64 pixels, so the grid and its legend are legible."""
    return max(1, 64 // max(image_shape[:2]))
