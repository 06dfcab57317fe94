"""Heat maps of bits per sub-pixel (pixel_cnn_pp/heatmaps.py): one fixed scale for every
image, the grid's layout, the legend."""

import numpy as np

from pixel_cnn_pp import heatmaps


def test_the_scale_is_fixed():
    """0 black, max/2 red, max and above yellow, whatever else the map holds."""
    np.testing.assert_array_equal(heatmaps.colour([0., 4., 8., 11.]),
                                  [[0, 0, 0], [255, 0, 0], [255, 255, 0], [255, 255, 0]])
    np.testing.assert_array_equal(heatmaps.colour([1., 3.], max_bits=2.), [[255, 0, 0], [255, 255, 0]])


def test_the_same_bits_give_the_same_colour_in_different_images():
    """Two images of different content whose maps span different ranges: where their bits
    are equal, so are their colours (a scale per image, such as its own 99th percentile,
    would colour them differently)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    bits = np.stack([rng.uniform(0, 3, (8, 8)), rng.uniform(0, 10, (8, 8))])
    bits[:, 2, 5] = 2.5
    grid = heatmaps.grid(images, bits, cols=2)
    cell = 2 * 8 + 3
    maps = [grid[:8, k * cell + 9:k * cell + 17] for k in range(2)]
    np.testing.assert_array_equal(maps[0][2, 5], maps[1][2, 5])
    for k in range(2):
        np.testing.assert_array_equal(maps[k], heatmaps.colour(bits[k]))
        np.testing.assert_array_equal(grid[:8, k * cell:k * cell + 8], images[k])


def test_the_grid_holds_every_image_beside_its_map_and_the_legend():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 8, 4, 1), dtype=np.uint8)  # grayscale, shown as RGB
    bits = rng.uniform(0, 9, (10, 8, 4))
    grid = heatmaps.grid(images, bits, max_bits=6., cols=4)
    cell_w, cell_h = 2 * 4 + 3, 8 + 2
    width = max(4 * cell_w, 8 + 4 * len(heatmaps.CAPTION))  # the caption's width
    assert grid.shape == (3 * cell_h + 32, width, 3)
    for k in range(10):
        y, x = (k // 4) * cell_h, (k % 4) * cell_w
        np.testing.assert_array_equal(grid[y:y + 8, x:x + 4], np.repeat(images[k], 3, -1))
        np.testing.assert_array_equal(grid[y:y + 8, x + 5:x + 9], heatmaps.colour(bits[k], 6.))
    assert (grid[2 * cell_h:3 * cell_h, 2 * cell_w:] == 255).all()  # two empty cells
    legend = grid[3 * cell_h:]
    bar = legend[4:12, 4:4 + max(min(200, 4 * cell_w - 16), 40)]  # 40 px at least
    np.testing.assert_array_equal(bar[0], heatmaps.colour(np.linspace(0, 6., bar.shape[1]), 6.))
    assert (bar == bar[:1]).all()  # every row of the bar the same
    assert (legend[15:20] == 0).any() and (legend[23:28] == 0).any()  # tick values, caption
    np.testing.assert_array_equal(heatmaps.grid(images, bits, 6., cols=4, zoom=3),
                                  grid.repeat(3, axis=0).repeat(3, axis=1))
