"""Folders of image files (folders.py) as every script reads them: the layouts and classes,
each file's header without decoding it, decoding (formats, channels, 16 bits, fitting), the
training pipeline over files (the same batches as from arrays, resume, a broken file named),
the cache, the held-out split; data.load of a folder, of an .npz of x alone and of tfds:NAME
(mocked); train.py, sample.py and score.py on a folder of class subfolders."""

import csv
import json
import os
import re
import struct
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pixel_cnn_pp import cli, config, data as data_lib, folders, training
from pixel_cnn_pp.config import ConfigError
from pixel_cnn_pp.datafiles import DataError
from pixel_cnn_pp.images import scale

from conftest import SMALL, encode_image, run_in_process, uint8_images, write_image_folder


# ---------------------------------------------------------------------- listing

def test_layouts_and_classes(tmp_path):
    """Classes are the sorted subfolders (images anywhere below each; hidden ones and other
    extensions ignored); a flat folder has none; train/ and test/ are its splits."""
    written = write_image_folder(str(tmp_path / 'd'), classes=['b_dog', 'a_cat'], n=2, shape=(4, 4, 3))
    os.makedirs(tmp_path / 'd' / 'train' / 'a_cat' / 'more')
    (tmp_path / 'd' / 'train' / 'a_cat' / 'more' / 'x.PNG').write_bytes(encode_image(uint8_images((4, 4, 3))))
    (tmp_path / 'd' / 'train' / 'a_cat' / 'notes.txt').write_text('not an image')
    os.makedirs(tmp_path / 'd' / 'train' / '.ipynb_checkpoints')
    (tmp_path / 'd' / 'train' / '.ipynb_checkpoints' / 'y.png').write_bytes(b'')
    found = folders.listing(str(tmp_path / 'd' / 'train'))
    assert found.class_names == ('a_cat', 'b_dog')
    assert [os.path.relpath(p, tmp_path / 'd' / 'train') for p in found.paths] == [
        'a_cat/000.png', 'a_cat/001.png', 'a_cat/more/x.PNG', 'b_dog/000.png', 'b_dog/001.png']
    np.testing.assert_array_equal(found.labels, [0, 0, 0, 1, 1])
    assert folders.splits(str(tmp_path / 'd')) == (str(tmp_path / 'd' / 'train'), str(tmp_path / 'd' / 'test'))
    # a model's classes: a test folder with some of them
    test = folders.listing(str(tmp_path / 'd' / 'test' / 'b_dog' / '..'), ('a_cat', 'b_dog', 'c_owl'))
    assert test.class_names == ('a_cat', 'b_dog', 'c_owl') and list(test.labels) == [0, 0, 1, 1]
    np.testing.assert_array_equal(written['test'][1], [0, 0, 1, 1])
    flat = write_image_folder(str(tmp_path / 'flat'), n=3, shape=(4, 4, 1), splits=())
    assert folders.listing(str(tmp_path / 'flat')).labels is None and flat[None][1] is None
    assert folders.splits(str(tmp_path / 'flat')) == (str(tmp_path / 'flat'), None)


@pytest.mark.parametrize('make, message', [
    (lambda d: (d / 'e').mkdir(), r'e: a folder with no PNG, JPEG, BMP or GIF images$'),
    (lambda d: write_image_folder(str(d / 'e'), classes=['a'], n=1, shape=(4, 4, 1), splits=()) and
     (d / 'e' / 'top.png').write_bytes(b'x'), r'holds both image files \(top.png\) and folders of images \(a\)'),
    (lambda d: write_image_folder(str(d / 'e'), classes=['a'], n=1, shape=(4, 4, 1), splits=()) and
     (d / 'e' / 'b').mkdir(), r'the class folder b holds no images$'),
    (lambda d: write_image_folder(str(d / 'e'), classes=['zebra'], n=1, shape=(4, 4, 1), splits=()),
     r"the class folder zebra is not one of the model's classes \(cat, dog\)$"),
])
def test_listing_refuses(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message) as e:
        folders.listing(str(tmp_path / 'e'), ('cat', 'dog') if 'zebra' in message else None)
    assert e.value.field is None  # a file's message: a plain sentence


# ---------------------------------------------------------------------- one file

def bmp8(gray=True):
    """An 8-bit BMP of 2x2 pixels, its palette gray (entry i = i, i, i) or not."""
    palette = b''.join(bytes([i, i, i, 0]) if gray else bytes([i, 0, 255 - i, 0]) for i in range(256))
    pixels = bytes([1, 2, 0, 0, 3, 4, 0, 0])  # rows of 4 bytes
    offset = 14 + 40 + len(palette)
    return (b'BM' + struct.pack('<IHHI', offset + len(pixels), 0, 0, offset)
            + struct.pack('<IiiHHIIiiII', 40, 2, 2, 1, 8, 0, len(pixels), 0, 0, 256, 0) + palette + pixels)


def test_probe_reads_headers_and_ends():
    """Kind, size and channels of each format from its bytes, never decoded; a file cut
    short, empty, not an image, a bomb, a BMP TensorFlow decodes wrong: each its reason."""
    rgb, gray = uint8_images((6, 10, 3), 1), uint8_images((6, 10, 1), 2)
    rgba = np.concatenate([rgb, gray], -1)
    cases = [('png', rgb, 3), ('png', gray, 1), ('png', rgba, 4), ('jpeg', rgb, 3), ('jpeg', gray, 1),
             ('bmp', rgb, 3), ('bmp', rgba, 4), ('gif', rgb, 3)]
    for kind, x, channels in cases:
        data = encode_image(x, kind)
        info = folders.probe(data)
        assert info == folders.Info(kind, 6, 10, channels, 8), (kind, x.shape)
        assert tf.io.decode_image(data, expand_animations=False).shape[:2] == (6, 10)
    assert folders.probe(tf.io.encode_png(rgb.astype(np.uint16)).numpy()).depth == 16
    assert folders.probe(bmp8()) == folders.Info('bmp', 2, 2, 1)
    png = encode_image(rgb)
    from test_images import bomb_png
    for data, why in [(b'', 'an empty file'), (b'some text', 'not a PNG, JPEG, BMP or GIF file'),
                      (png[:len(png) - 20], 'a truncated PNG'), (encode_image(rgb, 'jpeg')[:-30], 'a truncated JPEG'),
                      (encode_image(rgb, 'bmp')[:-7], 'a truncated BMP'), (encode_image(rgb, 'gif')[:-2], 'a truncated GIF'),
                      (encode_image(rgb, 'jpeg')[:40], r'a broken or truncated JPEG \(no frame header\)'),
                      (bomb_png(), 'its header says 20000x20000 pixels, more than the 64 megapixels read'),
                      (bmp8(gray=False), 'an 8-bit BMP with a colour palette')]:
        with pytest.raises(DataError, match=why):
            folders.probe(data)


def test_read_info_finds_a_jpeg_frame_after_a_large_exif_block(tmp_path):
    jpeg = encode_image(uint8_images((8, 12, 3)), 'jpeg')
    app1 = b'\xff\xe1' + struct.pack('>H', 65000) + b'\0' * 64998  # 65 kB of metadata before the frame
    (tmp_path / 'big.jpg').write_bytes(jpeg[:2] + app1 + app1 + jpeg[2:])
    assert folders.read_info(str(tmp_path / 'big.jpg'))[:4] == ('jpeg', 8, 12, 3)


def test_decoding_every_format_and_conversion(tmp_path):
    """The pixels tf.io gives each file, converted to the set's channels: gray repeated,
    alpha dropped, 16 bits rounded to the nearest of 256 levels, a GIF's first frame; and
    ImageFiles indexes as NumPy does."""
    rgb = uint8_images((3, 8, 4, 3), 3)
    rgb[..., 2] = rgb[..., 1] = rgb[..., 0] // 64 * 64  # few colours: a GIF keeps them exactly
    sixteen = np.random.default_rng(4).integers(0, 65536, (8, 4, 3), dtype=np.uint16)
    files = {'a.png': encode_image(rgb[0]), 'b.bmp': encode_image(rgb[1], 'bmp'), 'c.gif': encode_image(rgb[2], 'gif'),
             'd.png': encode_image(rgb[0][..., :1]), 'e.png': encode_image(np.concatenate([rgb[1], rgb[0][..., :1]], -1)),
             'f.png': tf.io.encode_png(sixteen).numpy(), 'g.bmp': bmp8()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / n) for n in sorted(files)]
    infos = folders.scan(paths).infos
    assert folders.set_channels(infos, paths) == 3
    assert folders.conversions(infos, paths, 3) == {
        'alpha channel dropped (RGBA or gray + alpha)': [paths[4]], '16-bit PNG scaled to 8 bits': [paths[5]],
        'grayscale repeated to 3 channels (others are in color)': [paths[3], paths[6]]}
    x = folders.ImageFiles(paths[:6], (8, 4, 3), deep=[i.depth == 16 for i in infos[:6]])
    got = x[:]
    expected = [rgb[0], rgb[1], rgb[2], np.repeat(rgb[0][..., :1], 3, -1), rgb[1],
                ((sixteen.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)]
    np.testing.assert_array_equal(got, np.stack(expected))
    np.testing.assert_array_equal(x[np.array([5, 0, 0])], got[[5, 0, 0]])
    np.testing.assert_array_equal(x[2], got[2])
    assert len(x) == 6 and x.shape == (6, 8, 4, 3) and x.dtype == np.uint8
    gray = folders.ImageFiles([paths[6]], (2, 2, 1))[:]
    np.testing.assert_array_equal(gray[0, ..., 0], [[3, 4], [1, 2]])  # bottom-up rows
    with pytest.raises(DataError, match=r'a.png is in color, and the model\'s images are grayscale'):
        folders.set_channels(infos, paths, 1)


def test_fitting_is_one_function_for_files_and_arrays(tmp_path):
    """--image_size's resize-then-centre-crop gives the same pixels from files (in the
    pipeline) as from arrays; an image of the size already is left as it is."""
    x = uint8_images((2, 20, 12, 3), 5)
    for k in range(2):
        (tmp_path / ('%d.png' % k)).write_bytes(encode_image(x[k]))
    paths = [str(tmp_path / '0.png'), str(tmp_path / '1.png')]
    from_files = folders.ImageFiles(paths, (8, 8, 3), 'resize')[:]
    np.testing.assert_array_equal(from_files, folders.fit_array(x, (8, 8)))
    # 20x12 covers 8x8 at 13x8 (scale 2/3): resized, then rows 2..9 of the 13
    resized = tf.image.resize(tf.cast(x, tf.float32), (13, 8), 'bilinear', antialias=True)
    np.testing.assert_array_equal(from_files, tf.cast(tf.round(resized), tf.uint8)[:, 2:10])
    np.testing.assert_array_equal(folders.ImageFiles(paths, (20, 12, 3), 'resize')[:], x)
    np.testing.assert_array_equal(folders.fit_array(x, (12, 4), 'pad'), data_lib.fit_images(x, (12, 4, 3))[0])


# ---------------------------------------------------------------------- data.load

def test_a_folder_with_train_and_test_class_folders(tmp_path, capsys):
    written = write_image_folder(str(tmp_path / 'd'), classes=['seven', 'one', 'four'], n={'train': 3, 'test': 2})
    d = data_lib.load('folder', str(tmp_path / 'd'), class_conditional=True)
    assert isinstance(d.train_x, folders.ImageFiles) and d.train_x.shape == (9, 28, 28, 1)
    assert d.class_names == ('four', 'one', 'seven') and d.num_labels == 3
    np.testing.assert_array_equal(d.train_x[:], written['train'][0])
    np.testing.assert_array_equal(d.test_x[:], written['test'][0])
    np.testing.assert_array_equal(d.train_y, written['train'][1])
    np.testing.assert_array_equal(d.test_y, written['test'][1])
    assert capsys.readouterr().out == '%s: 9 training and 6 test images of 28x28x1, 3 classes (four, one, seven)\n' % (
        tmp_path / 'd')


def test_a_flat_folder_holds_out_a_fixed_split(tmp_path, capsys):
    written = write_image_folder(str(tmp_path / 'd'), n=40, shape=(4, 4, 3), splits=())[None][0]
    d = data_lib.load('folder', str(tmp_path / 'd'), held_out=0.1)
    assert len(d.test_x) == 4 and len(d.train_x) == 36 and d.train_y is None
    train, test = data_lib.hold_out(None, 40, 0.1)
    np.testing.assert_array_equal(d.test_x[:], written[test])
    np.testing.assert_array_equal(d.train_x[:], written[train])
    assert 'held out as the test set (0.1 of the folder, a fixed seed)' in capsys.readouterr().out
    again = data_lib.load('folder', str(tmp_path / 'd'), held_out=0.1)
    assert again.test_x.paths == d.test_x.paths  # the same split every time


def test_hold_out_is_per_class_and_keeps_one_to_train_on():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 1)
    train, test = data_lib.hold_out(labels, 61, 0.2)
    assert [int((labels[test] == c).sum()) for c in range(3)] == [10, 2, 0]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(61))
    assert data_lib.hold_out(labels, 61, 0.2)[1].tolist() == test.tolist()
    assert data_lib.hold_out(None, 5, 0.5)[1].tolist() != data_lib.hold_out(None, 5, 0.5)[0].tolist()


def test_an_npz_of_x_alone_and_its_labels(tmp_path):
    x, y = uint8_images((30, 4, 4, 3)), np.arange(30) % 3
    np.savez(tmp_path / 'x.npz', x=x)
    d = data_lib.load('npz', str(tmp_path / 'x.npz'))
    assert (len(d.train_x), len(d.test_x), d.train_y) == (27, 3, None)
    np.savez(tmp_path / 'xy.npz', x=x, y=y, class_names=np.array(['a', 'b', 'c']))
    d = data_lib.load('npz', str(tmp_path / 'xy.npz'), class_conditional=True, held_out=0.2)
    train, test = data_lib.hold_out(y, 30, 0.2)
    np.testing.assert_array_equal(d.test_x, x[test])
    np.testing.assert_array_equal(d.test_y, y[test])
    assert (d.num_labels, d.class_names, len(d.test_x)) == (3, ('a', 'b', 'c'), 6)


def test_sizes_said_plainly(tmp_path):
    """Images not of one size, or whose sides are not multiples of 4, are refused naming the
    first odd file and its size, and --image_size as the way out; with image_size every
    image is resized and centre-cropped, the same as an .npz of those pixels."""
    for name, shape in (('a.png', (28, 28, 1)), ('b.png', (28, 28, 1)), ('c.png', (30, 28, 1))):
        (tmp_path / 'odd').mkdir(exist_ok=True)
        (tmp_path / 'odd' / name).write_bytes(encode_image(uint8_images(shape, len(name))))
    with pytest.raises(DataError) as e:
        data_lib.load('folder', str(tmp_path / 'odd'))
    assert e.value.field == 'data_dir' and e.value.values == {'data_dir': str(tmp_path / 'odd'), 'image_size': None}
    with mock.patch.object(cli, 'FLAGS', {'data_dir': None, 'image_size': None}):
        assert cli.flag_message(e.value) == (
            '--data_dir=%s: %s is 30x28 but %s is 28x28 (height x width): the images are not one size; pass '
            '--image_size=H,W to resize and centre-crop every image to one size (multiples of 4)'
            % (tmp_path / 'odd', tmp_path / 'odd' / 'c.png', tmp_path / 'odd' / 'a.png'))
    write_image_folder(str(tmp_path / 'ten'), n=5, shape=(10, 10, 3), splits=('train', 'test'))
    with pytest.raises(DataError, match=r'its images are 10x10 \(height x width; \S+/000.png, the first\), and '
                                        r'PixelCNN\+\+ needs a height and width that are multiples of 4'):
        data_lib.load('folder', str(tmp_path / 'ten'))
    d = data_lib.load('folder', str(tmp_path / 'odd'), image_size=(8, 8), held_out=0.34)
    assert d.train_x.shape == (2, 8, 8, 1) and d.train_x.fit == 'resize'
    same = write_image_folder(str(tmp_path / 'same'), n=3, shape=(20, 12, 3))
    np.savez(tmp_path / 'same.npz', train_x=same['train'][0], test_x=same['test'][0])
    np.testing.assert_array_equal(data_lib.load('folder', str(tmp_path / 'same'), image_size=(8, 8)).train_x[:],
                                  data_lib.load('npz', str(tmp_path / 'same.npz'), image_size=(8, 8)).train_x)


def test_unreadable_files_refused_unless_allowed(tmp_path, capsys):
    write_image_folder(str(tmp_path / 'd'), classes=['a', 'b'], n=3, shape=(4, 4, 3))
    (tmp_path / 'd' / 'train' / 'a' / 'empty.png').write_bytes(b'')
    png = encode_image(uint8_images((4, 4, 3)))
    (tmp_path / 'd' / 'test' / 'b' / 'cut.png').write_bytes(png[:len(png) // 2])
    with pytest.raises(DataError) as e:
        data_lib.load('folder', str(tmp_path / 'd'))
    assert e.value.field == 'data_dir' and e.value.values['skip_unreadable'] is True
    assert str(e.value) == ('data_dir=%s: %s is not readable (an empty file), nor is 1 more file; skip_unreadable '
                            'leaves such files out' % (tmp_path / 'd', tmp_path / 'd' / 'train' / 'a' / 'empty.png')
                            ).replace('nor is 1 more file', 'nor are 1 more files')
    d = data_lib.load('folder', str(tmp_path / 'd'), skip_unreadable=True)
    assert (len(d.train_x), len(d.test_x)) == (6, 6)
    out = capsys.readouterr().out
    assert 'warning: skipped %s: an empty file' % (tmp_path / 'd' / 'train' / 'a' / 'empty.png') in out
    assert 'warning: skipped %s: a truncated PNG (its end is missing)' % (tmp_path / 'd' / 'test' / 'b' / 'cut.png') in out


def test_mixed_channels_converted_and_counted(tmp_path, capsys):
    for k, shape in enumerate([(4, 4, 1), (4, 4, 3), (4, 4, 4), (4, 4, 1)]):
        (tmp_path / 'train').mkdir(exist_ok=True)
        (tmp_path / 'train' / ('%d.png' % k)).write_bytes(encode_image(uint8_images(shape, k)))
    write_image_folder(str(tmp_path), n=2, shape=(4, 4, 1), splits=('test',))
    d = data_lib.load('folder', str(tmp_path))
    assert d.train_x.shape[1:] == (4, 4, 3)
    out = capsys.readouterr().out
    assert 'warning: alpha channel dropped (RGBA or gray + alpha): %s' % (tmp_path / 'train' / '2.png') in out
    assert 'warning: grayscale repeated to 3 channels (others are in color): 4 images (the first: %s)' % (
        tmp_path / 'train' / '0.png') in out
    np.testing.assert_array_equal(d.test_x[:1][..., 0], d.test_x[:1][..., 2])
    one = data_lib.load('folder', str(tmp_path / 'test' / '..'), channels=3)  # a model's channels
    assert one.test_x.shape[1:] == (4, 4, 3)


# ---------------------------------------------------------------------- the training pipeline

def test_batches_from_files_equal_batches_from_arrays(tmp_path, two_replicas):
    """The same epoch order, images, labels and weights as the arrays give, on one replica and
    on two, skipped batches and the test set's fillers included (what exact resume and the
    data-dependent init rest on)."""
    written = write_image_folder(str(tmp_path / 'd'), classes=['a', 'b'], n={'train': 10, 'test': 3}, shape=(8, 8, 3))
    files = data_lib.load('folder', str(tmp_path / 'd'))
    arrays = data_lib.Data(written['train'][0], written['train'][1], written['test'][0], written['test'][1], 2)
    strategy = tf.distribute.get_strategy()
    for make in (lambda d: data_lib.train_batches(strategy, d, 4, seed=3, epoch=2, skip=1),
                 lambda d: data_lib.test_batches(strategy, d, 4),
                 lambda d: data_lib.train_batches(two_replicas, d, 2, seed=3, epoch=0),
                 lambda d: data_lib.test_batches(two_replicas, d, 4)):
        ours, theirs = list(make(files)), list(make(arrays))
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            for s, t in zip(a, b):
                for u, v in zip(two_replicas.experimental_local_results(s) if hasattr(s, 'values') else [s],
                                two_replicas.experimental_local_results(t) if hasattr(t, 'values') else [t]):
                    np.testing.assert_array_equal(u.numpy(), v.numpy())
    first = training.epoch_order(len(files.train_x), 3, 0)[:4]
    np.testing.assert_array_equal(scale(files.train_x[first]), scale(arrays.train_x[first]))  # run.py's init batch


def test_a_file_broken_inside_is_named_when_it_is_read(tmp_path):
    """A file whose header and end are sound but whose data is not: the batch that reads it
    raises a DataError naming it (the pipeline's own error does not)."""
    write_image_folder(str(tmp_path / 'd'), n=8, shape=(4, 4, 3), splits=('train', 'test'))
    victim = tmp_path / 'd' / 'train' / '005.png'
    data = bytearray(victim.read_bytes())
    start = data.index(b'IDAT') + 4
    data[start:start + 8] = b'\xff' * 8
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r'^%s: not a readable image \(Invalid PNG data' % re.escape(str(victim))):
        data_lib.load('folder', str(tmp_path / 'd'))  # its check decodes the first images
    files = folders.ImageFiles(folders.listing(str(tmp_path / 'd' / 'train')).paths, (4, 4, 3))
    with pytest.raises(DataError, match=r'^%s: not a readable image \(' % re.escape(str(victim))):
        list(data_lib.train_batches(tf.distribute.get_strategy(), data_lib.Data(files, None, files, None, 0), 2,
                                    seed=1, epoch=0))


def test_the_cache_is_built_once_and_rebuilt_when_a_file_changes(tmp_path, capsys):
    written = write_image_folder(str(tmp_path / 'd'), classes=['a', 'b'], n=3, shape=(4, 4, 3))
    cache = str(tmp_path / 'c.npy')
    d = data_lib.load('folder', str(tmp_path / 'd'), cache=cache, progress_bar=False)
    assert isinstance(d.train_x, np.memmap) and 'decoding the images into the cache' in capsys.readouterr().out
    np.testing.assert_array_equal(d.train_x, written['train'][0])
    np.testing.assert_array_equal(d.test_x, written['test'][0])
    with mock.patch.object(folders.ImageFiles, 'dataset', side_effect=AssertionError('decoded again')):
        again = data_lib.load('folder', str(tmp_path / 'd'), cache=cache, progress_bar=False)
    np.testing.assert_array_equal(again.train_x, d.train_x)
    assert 'decoded images: the cache %s' % cache in capsys.readouterr().out
    new = uint8_images((4, 4, 3), 99)
    (tmp_path / 'd' / 'train' / 'a' / '000.png').write_bytes(encode_image(new))
    changed = data_lib.load('folder', str(tmp_path / 'd'), cache=cache, progress_bar=False)
    assert 'as it was made from other files' in capsys.readouterr().out
    np.testing.assert_array_equal(changed.train_x[0], new)
    assert sorted(os.listdir(tmp_path)) == ['c.npy', 'c.npy.json', 'd']


def test_tfds_sets_train_with_labels_and_class_names(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        d = data_lib.load('tfds:mnist', str(tmp_path), class_conditional=True)
        assert d.train_x.shape == (12, 28, 28, 1) and len(d.test_x) == 12
        assert d.class_names == tuple(str(k) for k in range(10)) and d.num_labels == 10
        split = data_lib.load('tfds:mnist:test', str(tmp_path), held_out=0.5)
        assert len(split.train_x) + len(split.test_x) == 12 and len(split.test_x) == len(
            data_lib.hold_out(np.concatenate([split.train_y, split.test_y]), 12, 0.5)[1])
    assert os.listdir(tmp_path) == []


def test_data_errors_are_config_errors_with_fields(tmp_path):
    with pytest.raises(ConfigError) as e:
        data_lib.load('mnist', str(tmp_path))
    assert e.value.field == 'data_set' and e.value.values == {'data_set': 'mnist'}
    with pytest.raises(DataError) as e:
        data_lib.load('folder', str(tmp_path / 'none'))
    assert e.value.field == 'data_dir' and str(e.value).startswith('data_dir=%s is not a folder' % (tmp_path / 'none'))
    with pytest.raises(DataError) as e:
        data_lib.load('npz', str(tmp_path / 'none.npz'))
    assert e.value.fields == ('data_dir', 'data_set')
    for bad in ('tfds:', 'tfds::x'):
        with pytest.raises(ConfigError) as e:
            config.TrainConfig(data_set=bad)
        assert e.value.field == 'data_set'
    assert config.TrainConfig(data_set='tfds:svhn_cropped:train[:10%]').data_set == 'tfds:svhn_cropped:train[:10%]'
    assert data_lib.file_stem('tfds:downsampled_imagenet/64x64:train') == 'tfds_downsampled_imagenet_64x64_train'


# ---------------------------------------------------------------------- the scripts

TINY = ['--nr_resnet=%d' % SMALL['nr_resnet'], '--nr_filters=%d' % SMALL['nr_filters'],
        '--nr_logistic_mix=%d' % SMALL['nr_logistic_mix'], '--batch_size=4', '--init_batch_size=4', '--noprogress',
        '--max_epochs=1', '--num_samples=0']


def test_class_conditional_on_a_folder_of_digits(tmp_path):
    """The issue's case: 28x28 grayscale PNGs in train/<class>/ and test/<class>/ train a
    class-conditional model; config.json records 28x28x1 and the class names; --mode=eval
    gives the same test bits/dim from the folder as from the same pixels in an .npz;
    sample.py --labels takes class names, score.py reads the test folder."""
    written = write_image_folder(str(tmp_path / 'digits'), classes=['3', 'seven', 'zero'], n={'train': 4, 'test': 2})
    save = str(tmp_path / 'save')
    run_in_process('train.py', '--data_set=folder', '--data_dir=%s' % (tmp_path / 'digits'), '--save_dir=' + save,
                   '--class_conditional', *TINY, status=0)
    saved = json.load(open(os.path.join(save, 'config.json')))
    assert saved['image_shape'] == [28, 28, 1] and saved['class_names'] == ['3', 'seven', 'zero']
    assert saved['num_labels'] == 3 and saved['data_set'] == 'folder'
    np.savez(tmp_path / 'digits.npz', train_x=written['train'][0], train_y=written['train'][1],
             test_x=written['test'][0], test_y=written['test'][1])
    bpd = {}
    for args in (['--data_set=folder', '--data_dir=%s' % (tmp_path / 'digits')],
                 ['--data_set=npz', '--data_dir=%s' % (tmp_path / 'digits.npz')]):
        _, out, _ = run_in_process('train.py', '--mode=eval', '--save_dir=' + save, '--batch_size=4', *args, status=0)
        bpd[args[0]] = float(re.search(r'^test bits_per_dim = (\S+) \(EMA weights\)$', out, re.M).group(1))
    assert abs(bpd['--data_set=folder'] - bpd['--data_set=npz']) <= 2e-3, bpd
    _, out, _ = run_in_process('sample.py', '--checkpoint=' + save, '--labels=zero,3,1', '--num_samples=3',
                               '--out=%s' % (tmp_path / 's'), '--noprogress', status=0)
    np.testing.assert_array_equal(np.load(tmp_path / 's.npz')['labels'], [2, 0, 1])  # '3' a name, 1 an index
    _, _, err = run_in_process('sample.py', '--checkpoint=' + save, '--labels=eight', '--out=%s' % (tmp_path / 't'),
                               status=cli.USAGE)
    assert "--labels must be class names (3, seven, zero) or integers in [0, 3), got eight" in err
    test = tmp_path / 'digits' / 'test'
    (test / 'seven' / 'bad.png').write_bytes(b'not a png')  # skipped, with a warning
    _, out, err = run_in_process('score.py', '--checkpoint=' + save, '--in=%s' % test, '--csv=%s' % (tmp_path / 's.csv'),
                                 '--noprogress', status=0)
    assert 'skipped %s' % (test / 'seven' / 'bad.png') in out and re.search(r'^test: 6 of 7 images$', out, re.M), out
    assert re.search(r"^test: 6 images, \d+\.\d{4} bits/dim on average \(likelihood, a class-conditional model's "
                     r"marginal over its 3 labels\)$", out, re.M), out
    rows = list(csv.DictReader(open(tmp_path / 's.csv')))
    assert [r['file'] for r in rows] == [os.path.relpath(p, test) for p in folders.listing(str(test)).paths
                                         if not p.endswith('bad.png')]


@pytest.mark.slow
@pytest.mark.parametrize('source', ['tfds:mnist', 'flat folder', 'npz of x'])
def test_train_py_trains_on(source, tmp_path):
    """--data_set=tfds:mnist (mocked), a flat folder (its held-out split), an .npz of x alone."""
    if source == 'flat folder':
        write_image_folder(str(tmp_path / 'flat'), n=24, shape=(8, 8, 3), splits=())
        args = ['--data_set=folder', '--data_dir=%s' % (tmp_path / 'flat')]
    elif source == 'npz of x':
        np.savez(tmp_path / 'x.npz', x=uint8_images((24, 8, 8, 1)))
        args = ['--data_set=npz', '--data_dir=%s' % (tmp_path / 'x.npz')]
    else:
        args = ['--data_set=tfds:mnist', '--data_dir=%s' % (tmp_path / 'tfds'), '--class_conditional']
    with tfds.testing.mock_data(num_examples=12):
        _, out, _ = run_in_process('train.py', *args, '--save_dir=%s' % (tmp_path / 'save'), *TINY, status=0)
    assert re.search(r'^Iteration 0, time = \d+s, train bits_per_dim = \d', out, re.M), out
    saved = json.load(open(tmp_path / 'save' / 'config.json'))
    assert saved['data_set'] == args[0].split('=', 1)[1]
    if source == 'tfds:mnist':
        assert saved['class_names'] == [str(k) for k in range(10)] and saved['image_shape'] == [28, 28, 1]
        assert os.path.exists(tmp_path / 'save' / 'test_bpd_tfds_mnist.npz')
    else:
        assert 'held out as the test set' in out
