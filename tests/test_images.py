"""images.py: the uint8 <-> [-1, 1] convention, the sample grid and files, reading image
sets (broken and hostile files included) and fitting them to a model."""

import ast
import os
import struct
import time
import zlib
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pixel_cnn_pp import cli, data as data_lib, folders, images, tfds_sets
from pixel_cnn_pp.datafiles import DataError

from conftest import OFFLINE, SMALL_CKPT, run_in_process, run_script, write_cifar_layout

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
    fitted, done = data_lib.fit_images(x, (4, 4, 3))
    assert fitted.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(fitted[:, :, 1:3, 0], x[:, 1:5, :, 0])  # crop rows 1..4
    assert np.all(fitted[:, :, [0, 3]] == 0)  # zero columns either side
    np.testing.assert_array_equal(fitted[..., 0], fitted[..., 2])
    assert done == ['grayscale repeated to 3 channels', 'height centre-cropped from 6 to 4',
                    'width zero-padded from 2 to 4']
    same, done = data_lib.fit_images(fitted, (4, 4, 3))
    assert same is fitted and done == []
    with pytest.raises(DataError, match='images of 3 channels cannot be fitted to 1'):
        data_lib.fit_images(fitted, (4, 4, 1))


def test_read_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / 'a.npz', test_x=x, test_y=np.arange(3))
    got, labels, keys = data_lib.read_images(str(tmp_path / 'a.npz'))
    assert keys == ('test_x', 'test_y')
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(labels, [0, 1, 2])
    (tmp_path / 'imgs').mkdir()
    for k in range(3):
        tf.io.write_file(str(tmp_path / 'imgs' / ('%d.png' % k)), tf.io.encode_png(x[k]))
    (tmp_path / 'imgs' / 'notes.txt').write_text('not an image')  # other extensions: ignored
    np.testing.assert_array_equal(data_lib.read_images(str(tmp_path / 'imgs'))[0], x)
    with tfds.testing.mock_data(num_examples=5):
        got, labels, _ = data_lib.read_images('tfds:cifar10:test')
    assert got.shape == (5, 32, 32, 3) and labels.shape == (5,)


@pytest.mark.parametrize('make, message', [
    (lambda d: str(d / 'missing.npz'), 'no such file or folder'),
    (lambda d: (d / 'empty').mkdir() or str(d / 'empty'), 'empty: a folder with no PNG, JPEG, BMP or GIF images$'),
    (lambda d: ((d / 'bad').mkdir(), (d / 'bad' / 'x.png').write_bytes(b'nope'), str(d / 'bad'))[-1],
     r'bad: a folder with no readable image files \(1 unreadable\)$'),
    (lambda d: ((d / 't.npz').write_bytes(b'PK\x03\x04trunc'), str(d / 't.npz'))[-1], 'not a readable .npz'),
    (lambda d: np.savez(d / 'k.npz', images=np.zeros((1, 4, 4, 3), np.uint8)) or str(d / 'k.npz'),
     'neither x nor test_x'),
    (lambda d: np.savez(d / 'f.npz', x=np.zeros((1, 4, 4, 3))) or str(d / 'f.npz'), 'expected uint8 images'),
    (lambda d: np.savez(d / 'o.npz', x=np.array([{}], object)) or str(d / 'o.npz'), 'not a readable .npz'),
    (lambda d: 'tfds:cifar10:', r'^tfds:cifar10:: expected tfds:NAME\[:SPLIT\], e.g. tfds:svhn_cropped:test$'),
    (lambda d: 'tfds::test', r'expected tfds:NAME\[:SPLIT\]'),
    (lambda d: (d / 'notes.txt').write_text('my notes') and str(d / 'notes.txt'),
     r'notes.txt: not an .npz \(expected an .npz file, a folder of images, or tfds:NAME\[:SPLIT\]\)$'),
    (lambda d: np.save(d / 'a.npy', np.zeros((1, 4, 4, 3), np.uint8)) or str(d / 'a.npy'), r'a.npy: not an .npz'),
])
def test_read_images_errors(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        data_lib.read_images(make(tmp_path))


def _chunk(kind, payload):
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def bomb_png(width=20000, height=20000):
    """A 1 kB PNG whose IHDR announces width x height RGB pixels (a valid start of a zlib
    stream of zeros: decoding it would allocate 1.2 GB)."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (folders.PNG_SIGNATURE + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', zlib.compress(b'\0' * (1 << 20), 9))
            + _chunk(b'IEND', b''))


def test_header_sizes_against_tensorflow():
    rng = np.random.default_rng(1)
    for h, w in ((8, 12), (300, 5)):
        x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        jpeg = tf.io.encode_jpeg(x).numpy()
        kind, height, width, depth = folders.header(jpeg)
        assert (kind, [height, width]) == ('jpeg', tf.io.extract_jpeg_shape(jpeg).numpy()[:2].tolist())
        assert folders.header(tf.io.encode_png(x).numpy()) == ('png', h, w, 8)
    assert folders.header(bomb_png(7, 9)) == ('png', 9, 7, 8)
    assert folders.header(b'GIF89a...') is None


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
    real_files = folders.ImageFiles
    with mock.patch.object(folders, 'ImageFiles', lambda paths, *a: decoded.extend(paths) or real_files(paths, *a)):
        got, labels, _ = data_lib.read_images(str(folder))
    assert decoded == [str(folder / n) for n in ('a_good.png', 'b_rgba.png', 'c_16bit.png', 'd_gray.jpg')]
    assert labels is None and got.shape == (4, 8, 8, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], x[0])
    np.testing.assert_array_equal(got[1], x[1])  # alpha dropped
    np.testing.assert_array_equal(got[2], x[2])  # 16-bit v * 257 -> v
    gray = tf.io.decode_jpeg(gray_jpeg).numpy()
    np.testing.assert_array_equal(got[3], np.repeat(gray, 3, axis=-1))
    lines = capsys.readouterr().out.splitlines()
    path = lambda name: str(folder / name)  # noqa: E731
    assert lines == [
        'warning: skipped %s: not a PNG, JPEG, BMP or GIF file' % path('e_text.png'),
        'warning: skipped %s: a truncated PNG (its end is missing)' % path('f_truncated.png'),
        'warning: skipped %s: a broken or truncated JPEG (no frame header)' % path('g_truncated.jpg'),
        'warning: skipped %s: its header says 20000x20000 pixels, more than the 64 megapixels read '
        '(not decoded)' % path('h_bomb.png'),
        'warning: alpha channel dropped (RGBA or gray + alpha): %s' % path('b_rgba.png'),
        'warning: 16-bit PNG scaled to 8 bits: %s' % path('c_16bit.png'),
        'warning: grayscale repeated to 3 channels (others are in color): %s' % path('d_gray.jpg')]


def test_a_grayscale_folder_stays_grayscale(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (2, 8, 4, 1), dtype=np.uint8)
    for k in range(2):
        (tmp_path / ('%d.png' % k)).write_bytes(tf.io.encode_png(x[k]).numpy())
    got, _, _ = data_lib.read_images(str(tmp_path))
    np.testing.assert_array_equal(got, x)  # fit_images repeats it for a color model


def test_tfds_missing_module_is_not_a_download_failure(tmp_path):
    with mock.patch.object(tfds, 'load', side_effect=ModuleNotFoundError("No module named 'scipy'", name='scipy')):
        with pytest.raises(DataError, match="needs the Python module 'scipy', which is not installed: a "
                                            "missing dependency"):
            data_lib.read_images('tfds:svhn_cropped:test')
    with mock.patch.object(tfds, 'load', side_effect=TypeError('a bug')):
        with pytest.raises(TypeError, match='a bug'):  # a programming error is not a data problem
            data_lib.read_images('tfds:svhn_cropped:test')
    with mock.patch.object(tfds, 'load', side_effect=AssertionError('not prepared')), \
            mock.patch.object(tfds_sets, 'reachable', return_value=None), \
            mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                              side_effect=tfds.download.DownloadError('HTTP 404')):
        with pytest.raises(DataError, match=r'^tfds:svhn_cropped:test: tensorflow-datasets could not download '
                                            r'svhn_cropped into data_dir=\S+ \(HTTP 404\); use local data instead: '
                                            r'pass the images as an .npz or a folder of image files$'):
            data_lib.read_images('tfds:svhn_cropped:test', str(tmp_path))


def test_cifar10_from_the_python_batches_in_data_dir(tmp_path):
    """tfds:cifar10[:SPLIT] reads the official batches when data_dir holds them (as train.py
    does, data.read_tfds), with labels, never asking tensorflow-datasets; no split: test."""
    written = write_cifar_layout(str(tmp_path))
    with mock.patch.object(tfds, 'load', side_effect=AssertionError('not asked')):
        for spec, batch in (('tfds:cifar10:test', 'test_batch'), ('tfds:cifar10', 'test_batch')):
            x, y, keys = data_lib.read_images(spec, str(tmp_path))
            np.testing.assert_array_equal(x, written[batch][0])
            np.testing.assert_array_equal(y, written[batch][1])
        x, y, _ = data_lib.read_images('tfds:cifar10:train', str(tmp_path / 'cifar-10-python'))
        np.testing.assert_array_equal(x[7:14], written['data_batch_2'][0])
        assert x.shape == (35, 32, 32, 3) and y.shape == (35,)
        with pytest.raises(DataError, match=r"^tfds:cifar10:train\[:10\]: the CIFAR-10 python batches in \S+ "
                                            r"have the splits train and test, not 'train\[:10\]'$"):
            data_lib.read_images('tfds:cifar10:train[:10]', str(tmp_path))


def test_a_set_without_a_split_is_its_test_split():
    with mock.patch.object(tfds_sets, 'load', return_value=[{'image': np.zeros((2, 4, 4, 1), np.uint8)}]) as load:
        x, y, _ = data_lib.read_images('tfds:mnist', 'data')
    assert load.call_args.args[:3] == ('mnist', ['test'], 'data') and x.shape == (2, 4, 4, 1) and y is None


def test_a_failed_download_leaves_data_dir_as_it_was(tmp_path, monkeypatch):
    """What tensorflow-datasets created in data_dir before it failed (its set's folder, the
    downloads' temporary files, in folders that were there before too) is removed again."""
    data = tmp_path / 'data'
    os.makedirs(data / 'downloads' / 'extracted')
    (data / 'notes.txt').write_text('mine')
    before = sorted(str(p) for p in data.rglob('*'))
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)

    def fails_half_way(error):
        def download_and_prepare(builder):
            root = builder.data_dir_root
            os.makedirs(os.path.join(root, 'mnist', '3.0.1.incomplete7'))
            os.makedirs(os.path.join(root, 'downloads', 'extracted'), exist_ok=True)
            os.makedirs(os.path.join(root, 'downloads', 'mnist'))
            open(os.path.join(root, 'downloads', 'extracted', 'x.tmp.1'), 'w').close()
            raise error
        return download_and_prepare
    with mock.patch.object(tfds_sets, 'reachable', return_value=None):
        for error, raised, message in [
                (tfds.download.DownloadError('Connection reset by peer'), DataError,
                 r'^tfds:mnist:test: tensorflow-datasets could not download mnist into data_dir=\S+ '
                 r'\(Connection reset by peer\)'),
                (KeyboardInterrupt(), KeyboardInterrupt, None)]:  # interrupted: the same
            with mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare', fails_half_way(error)):
                with pytest.raises(raised, match=message):
                    data_lib.read_images('tfds:mnist:test', str(data))
            assert sorted(str(p) for p in data.rglob('*')) == before
        with mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                               fails_half_way(OSError(28, 'No space left on device'))):
            with pytest.raises(DataError, match=r'could not download mnist .*No space left on device'):
                data_lib.read_images('tfds:mnist:test', str(tmp_path / 'new' / 'data'))
    assert sorted(os.listdir(tmp_path)) == ['data']  # nor the data_dir (and its parent) it made


def test_tensorflow_datasets_is_quiet_unless_verbose(tmp_path, caplog, monkeypatch):
    """Its absl warnings (a folder without dataset_info.json, each time a set is looked for)
    and progress bars are off while it is called, unless verbose; as they were after."""
    from absl import logging as absl_logging
    from tensorflow_datasets.core.utils import tqdm_utils
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    verbosity = absl_logging.get_verbosity()
    with mock.patch.object(tfds_sets, 'reachable', return_value='offline'):
        for verbose in (False, True):
            caplog.clear()
            with pytest.raises(DataError, match='mnist is not in data_dir'):
                data_lib.read_images('tfds:mnist:test', str(tmp_path), verbose=verbose)
            said = [r.getMessage() for r in caplog.records if r.levelno >= 30]
            assert any('has no dataset_info.json' in m for m in said) is verbose, said
            assert tqdm_utils._active and absl_logging.get_verbosity() == verbosity
    with tfds_sets.quiet():
        assert not tqdm_utils._active and absl_logging.get_verbosity() == absl_logging.ERROR
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('script, spec_flag', [('sample.py', '--complete'), ('score.py', '--in')])
def test_offline_a_tfds_set_fails_at_once(tmp_path, script, spec_flag):
    """Offline, a set neither prepared in --data_dir nor downloadable ends the script within
    seconds (not tensorflow-datasets' minutes of retries) with one error naming the set, in
    at most 3 lines after the model's, and nothing created in --data_dir."""
    data = tmp_path / 'data'
    data.mkdir()
    began = time.time()
    out = run_script(script, '--checkpoint=' + SMALL_CKPT, '%s=tfds:mnist:test' % spec_flag, '--data_dir=%s' % data,
                     '--out=%s' % (tmp_path / 'c') if script == 'sample.py' else '--ood=tfds:mnist:train',
                     env=dict(OFFLINE, TF_CPP_MIN_LOG_LEVEL=None), timeout=90)  # the console a user sees
    seconds = time.time() - began
    assert out.returncode == cli.USAGE, out.stderr
    printed = out.stdout.splitlines()
    assert printed[0].startswith('loaded ')
    assert len(printed[1:] + out.stderr.splitlines()) <= 3, out.stdout + out.stderr
    assert ('%s: error: ' % script) in out.stderr and 'tfds:mnist:test: mnist is not in --data_dir=%s and cannot be ' \
        'downloaded (https://' % data in out.stderr and 'Traceback' not in out.stderr
    assert seconds < 30
    assert os.listdir(data) == [] and sorted(os.listdir(tmp_path)) == ['data']


def test_offline_sample_py_completes_the_cifar10_test_batch_in_data_dir(tmp_path, monkeypatch):
    """--complete=tfds:cifar10:test with the CIFAR-10 python batches in --data_dir: their
    test batch's first images, offline."""
    written = write_cifar_layout(str(tmp_path / 'data'))
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    with mock.patch.object(tfds, 'load', side_effect=AssertionError('not asked')):
        _, out, _ = run_in_process('sample.py', '--checkpoint=' + SMALL_CKPT, '--complete=tfds:cifar10:test',
                                   '--data_dir=%s' % (tmp_path / 'data'), '--num_samples=2', '--samples_per_image=1',
                                   '--out=%s' % (tmp_path / 'c'), '--noprogress', status=0)
    assert 'cifar10:test: 2 of 7 images' in out
    np.testing.assert_array_equal(np.load(tmp_path / 'c.npz')['given'], written['test_batch'][0][:2])


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
    name, fitted, files = cli.read_image_set(str(tmp_path / 'a.npz'), (8, 8, 3))
    assert name == 'a.npz' and fitted.shape == (3, 8, 8, 3) and files is None
    assert capsys.readouterr().out == ('a.npz: 3 images (grayscale repeated to 3 channels, height '
                                       'zero-padded from 6 to 8), read from the .npz key x\n')
    np.savez(tmp_path / 'b.npz', test_x=x, test_y=np.arange(3))
    cli.read_image_set(str(tmp_path / 'b.npz'), (8, 8, 1))
    assert capsys.readouterr().out.endswith(', read from the .npz keys test_x and test_y\n')
