"""images.py: the uint8 <-> [-1, 1] convention, the sample grid and files, reading image
sets (broken and hostile files included) and fitting them to a model."""

import ast
import os
import struct
import zlib
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pixel_cnn_pp import images
from pixel_cnn_pp.datafiles import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scale_and_back():
    np.testing.assert_allclose(images.scale(np.array([0, 127, 255], np.uint8)),
                               [-1., -0.5 / 127.5, 1.], rtol=1e-6)
    every = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(images.to_uint8(images.scale(every)), every)  # exact round trip
    np.testing.assert_array_equal(images.to_uint8(tf.constant([-3., 3., 0.0039])), [0, 255, 128])


def test_tile_and_write(tmp_path):
    x = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    grid = images.tile(x)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)  # 5 images: 3 columns, 2 rows
    np.testing.assert_array_equal(grid[1:3, 4:6], x[1])
    assert (grid[0] == 255).all() and (grid[3] == 255).all()
    images.write_samples(x, str(tmp_path / 's'))
    np.testing.assert_array_equal(np.load(tmp_path / 's.npz')['samples'], x)
    np.testing.assert_array_equal(tf.io.decode_png(tf.io.read_file(str(tmp_path / 's.png'))), grid)


def test_fit_images():
    x = np.arange(2 * 6 * 2 * 1, dtype=np.uint8).reshape(2, 6, 2, 1)
    fitted, done = images.fit_images(x, (4, 4, 3))
    assert fitted.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(fitted[:, :, 1:3, 0], x[:, 1:5, :, 0])  # crop rows 1..4
    assert np.all(fitted[:, :, [0, 3]] == 0)  # zero columns either side
    np.testing.assert_array_equal(fitted[..., 0], fitted[..., 2])
    assert done == ['grayscale repeated to 3 channels', 'height centre-cropped from 6 to 4',
                    'width zero-padded from 2 to 4']
    same, done = images.fit_images(fitted, (4, 4, 3))
    assert same is fitted and done == []
    with pytest.raises(DataError, match='images of 3 channels cannot be fitted to 1'):
        images.fit_images(fitted, (4, 4, 1))


def test_read_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / 'a.npz', test_x=x, test_y=np.arange(3))
    got, labels, keys = images.read_images(str(tmp_path / 'a.npz'))
    assert keys == ('test_x', 'test_y')
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(labels, [0, 1, 2])
    (tmp_path / 'imgs').mkdir()
    for k in range(3):
        tf.io.write_file(str(tmp_path / 'imgs' / ('%d.png' % k)), tf.io.encode_png(x[k]))
    (tmp_path / 'imgs' / 'notes.txt').write_text('not an image')  # other extensions: ignored
    np.testing.assert_array_equal(images.read_images(str(tmp_path / 'imgs'))[0], x)
    with tfds.testing.mock_data(num_examples=5):
        got, labels, _ = images.read_images('tfds:cifar10:test')
    assert got.shape == (5, 32, 32, 3) and labels.shape == (5,)


@pytest.mark.parametrize('make, message', [
    (lambda d: str(d / 'missing.npz'), 'no such file or folder'),
    (lambda d: (d / 'empty').mkdir() or str(d / 'empty'), 'a folder with no readable PNG or JPEG images'),
    (lambda d: ((d / 'bad').mkdir(), (d / 'bad' / 'x.png').write_bytes(b'nope'), str(d / 'bad'))[-1],
     'bad: a folder with no readable PNG or JPEG images'),
    (lambda d: ((d / 't.npz').write_bytes(b'PK\x03\x04trunc'), str(d / 't.npz'))[-1], 'not a readable .npz'),
    (lambda d: np.savez(d / 'k.npz', images=np.zeros((1, 4, 4, 3), np.uint8)) or str(d / 'k.npz'),
     'neither x nor test_x'),
    (lambda d: np.savez(d / 'f.npz', x=np.zeros((1, 4, 4, 3))) or str(d / 'f.npz'), 'expected uint8 images'),
    (lambda d: np.savez(d / 'o.npz', x=np.array([{}], object)) or str(d / 'o.npz'), 'not a readable .npz'),
    (lambda d: 'tfds:cifar10', 'expected tfds:NAME:SPLIT'),
])
def test_read_images_errors(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        images.read_images(make(tmp_path))


def _chunk(kind, payload):
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def bomb_png(width=20000, height=20000):
    """A 1 kB PNG whose IHDR announces width x height RGB pixels (a valid start of a zlib
    stream of zeros: decoding it would allocate 1.2 GB)."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (images.PNG_SIGNATURE + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', zlib.compress(b'\0' * (1 << 20), 9))
            + _chunk(b'IEND', b''))


def test_header_sizes_against_tensorflow():
    rng = np.random.default_rng(1)
    for h, w in ((8, 12), (300, 5)):
        x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        jpeg = tf.io.encode_jpeg(x).numpy()
        kind, height, width, depth = images.header(jpeg)
        assert (kind, [height, width]) == ('jpeg', tf.io.extract_jpeg_shape(jpeg).numpy()[:2].tolist())
        assert images.header(tf.io.encode_png(x).numpy()) == ('png', h, w, 8)
    assert images.header(bomb_png(7, 9)) == ('png', 9, 7, 8)
    assert images.header(b'GIF89a...') is None


def test_a_folder_of_broken_and_hostile_files(tmp_path, capsys):
    """Each kind of bad file gets its documented outcome, with one warning line, and the
    good ones are read: skipped (not an image, truncated, a bomb), converted (alpha dropped,
    16 bits scaled to 8, grayscale repeated to 3 channels beside color images)."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    folder = tmp_path / 'mixed'
    folder.mkdir()
    write = lambda name, data: (folder / name).write_bytes(data)  # noqa: E731
    write('a_good.png', tf.io.encode_png(x[0]).numpy())
    alpha = np.concatenate([x[1], rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)], -1)
    write('b_rgba.png', tf.io.encode_png(alpha).numpy())
    write('c_16bit.png', tf.io.encode_png(x[2].astype(np.uint16) * 257).numpy())
    gray_jpeg = tf.io.encode_jpeg(x[3, ..., :1]).numpy()
    write('d_gray.jpg', gray_jpeg)
    write('e_text.png', b'just some text, named like an image')
    png = tf.io.encode_png(x[0]).numpy()
    write('f_truncated.png', png[:len(png) // 2])
    write('g_truncated.jpg', gray_jpeg[:40])
    write('h_bomb.png', bomb_png())
    decoded = []
    real_decode = tf.io.decode_png
    with mock.patch.object(tf.io, 'decode_png', lambda data, **kw: decoded.append(len(data)) or real_decode(data, **kw)):
        got, labels, _ = images.read_images(str(folder))
    assert len(bomb_png()) not in decoded  # refused from its header, never decoded
    assert labels is None and got.shape == (4, 8, 8, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], x[0])
    np.testing.assert_array_equal(got[1], x[1])  # alpha dropped
    np.testing.assert_array_equal(got[2], x[2])  # 16-bit v * 257 -> v
    gray = tf.io.decode_jpeg(gray_jpeg).numpy()
    np.testing.assert_array_equal(got[3], np.repeat(gray, 3, axis=-1))
    lines = capsys.readouterr().out.splitlines()
    path = lambda name: str(folder / name)  # noqa: E731
    assert lines == [
        'warning: skipped %s: not a PNG or JPEG file' % path('e_text.png'),
        'warning: skipped %s: a broken or truncated PNG (Invalid PNG data, size %d)' % (
            path('f_truncated.png'), len(png) // 2),
        'warning: skipped %s: a broken or truncated JPEG (no frame header)' % path('g_truncated.jpg'),
        'warning: skipped %s: its header says 20000x20000 pixels, more than the 64 megapixels read '
        '(not decoded)' % path('h_bomb.png'),
        'warning: transparent pixels: alpha dropped: %s' % path('b_rgba.png'),
        'warning: 16-bit PNG scaled to 8 bits: %s' % path('c_16bit.png'),
        'warning: grayscale repeated to 3 channels (others are in color): %s' % path('d_gray.jpg')]


def test_a_grayscale_folder_stays_grayscale(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (2, 8, 4, 1), dtype=np.uint8)
    for k in range(2):
        (tmp_path / ('%d.png' % k)).write_bytes(tf.io.encode_png(x[k]).numpy())
    got, _, _ = images.read_images(str(tmp_path))
    np.testing.assert_array_equal(got, x)  # fit_images repeats it for a color model


def test_tfds_missing_module_is_not_a_download_failure():
    with mock.patch.object(tfds, 'load', side_effect=ModuleNotFoundError("No module named 'scipy'", name='scipy')):
        with pytest.raises(DataError, match="needs the Python module 'scipy', which is not installed: a "
                                            "missing dependency"):
            images.read_images('tfds:svhn_cropped:test')
    with mock.patch.object(tfds, 'load', side_effect=TypeError('a bug')):
        with pytest.raises(TypeError, match='a bug'):  # a programming error is not a data problem
            images.read_images('tfds:svhn_cropped:test')
    with mock.patch.object(tfds, 'load', side_effect=tfds.download.DownloadError('HTTP 404')):
        with pytest.raises(DataError, match='tfds:svhn_cropped:test: tensorflow-datasets could not load it .HTTP 404'):
            images.read_images('tfds:svhn_cropped:test')


def _module_imports(name):
    """The pixel_cnn_pp modules and top-level packages a module imports when it is imported
    (module level, try blocks included; not inside functions)."""
    tree = ast.parse(open(os.path.join(ROOT, *name.split('.')) + '.py').read())
    found = set()
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
            if node.module == 'pixel_cnn_pp':
                found.update('pixel_cnn_pp.' + a.name for a in node.names)
        elif isinstance(node, (ast.Try, ast.If, ast.With)):
            nodes.extend(getattr(node, 'body', []) + getattr(node, 'orelse', []) + getattr(node, 'finalbody', [])
                         + [n for h in getattr(node, 'handlers', []) for n in h.body])
    return found


def test_sampling_and_scoring_do_not_import_the_data_sets():
    """Nor tensorflow-datasets: what `import pixel_cnn_pp.sampling, pixel_cnn_pp.scoring`
    loads, followed through the package (its __init__ included)."""
    seen, todo = set(), ['pixel_cnn_pp', 'pixel_cnn_pp.sampling', 'pixel_cnn_pp.scoring']
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(ROOT, *name.split('.'))
        module = name + '.__init__' if os.path.isdir(path) else name
        todo.extend(m for m in _module_imports(module) if m and m.startswith('pixel_cnn_pp'))
    assert 'pixel_cnn_pp.images' in seen
    assert 'pixel_cnn_pp.data' not in seen and 'pixel_cnn_pp.imagenet' not in seen
    imported = set().union(*(_module_imports(m + '.__init__' if os.path.isdir(os.path.join(ROOT, *m.split('.')))
                                             else m) for m in seen))
    assert not {m for m in imported if m.split('.')[0] == 'tensorflow_datasets'}


def test_the_line_of_what_was_read_names_the_npz_keys(tmp_path, capsys):
    from pixel_cnn_pp import cli
    x = np.zeros((3, 6, 8, 1), np.uint8)
    np.savez(tmp_path / 'a.npz', x=x, test_x=x[:1])
    name, fitted = cli.read_image_set(str(tmp_path / 'a.npz'), (8, 8, 3))
    assert name == 'a.npz' and fitted.shape == (3, 8, 8, 3)
    assert capsys.readouterr().out == ('a.npz: 3 images (grayscale repeated to 3 channels, height '
                                       'zero-padded from 6 to 8), read from the .npz key x\n')
    np.savez(tmp_path / 'b.npz', test_x=x, test_y=np.arange(3))
    cli.read_image_set(str(tmp_path / 'b.npz'), (8, 8, 1))
    assert capsys.readouterr().out.endswith(', read from the .npz keys test_x and test_y\n')
