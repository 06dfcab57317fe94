"""The dependencies the README's commands need on their way: tensorflow-datasets' download
path for every set the README names, run offline as far as the network (so a missing
package fails here, not on a user's first run)."""

import os
import tempfile
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import downloader

# The tfds sets the README and docs/ name: train.py's cifar10, score.py --ood=tfds:svhn_cropped:test,
# downsampled_imagenet (prepared copies only: its source is gone).
README_SETS = ('cifar10', 'svhn_cropped', 'downsampled_imagenet/32x32')


class ReachedTheNetwork(Exception):
    """Raised where tensorflow-datasets would open its first URL."""


def _offline(url, **kwargs):
    raise ReachedTheNetwork(url)


def test_readme_names_these_sets():
    root = os.path.join(os.path.dirname(__file__), '..')
    docs = [os.path.join(root, 'README.md')] + [os.path.join(root, 'docs', n) for n in
                                                os.listdir(os.path.join(root, 'docs')) if n.endswith('.md')]
    text = ''.join(open(p).read() for p in docs)
    for name in README_SETS:
        assert name in text


@pytest.mark.parametrize('name', README_SETS)
def test_download_path_reaches_the_network(tmp_path, name):
    """builder.code_path (etils resources: importlib_resources), the url_infos from the
    checksum file, and download_and_prepare up to the first URL it opens."""
    builder = tfds.builder(name, data_dir=str(tmp_path))
    assert os.path.isfile(builder.code_path)
    infos = builder.url_infos
    assert infos and all(info.checksum and info.size > 0 for info in infos.values())
    with mock.patch.object(downloader, '_open_url', _offline):
        with pytest.raises(ReachedTheNetwork) as e:
            builder.download_and_prepare()
    assert str(e.value) in infos


def test_svhn_files_can_be_read(tmp_path):
    """What tensorflow-datasets does after svhn_cropped's download: scipy.io.loadmat."""
    import scipy.io  # a missing scipy must fail here
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 3), dtype=np.uint8)
    path = str(tmp_path / 'test_32x32.mat')
    scipy.io.savemat(path, {'X': x, 'y': np.array([[10], [1], [2]], np.uint8)})
    builder = tfds.builder('svhn_cropped', data_dir=tempfile.mkdtemp(dir=str(tmp_path)))
    examples = [e for _, e in builder._generate_examples('test', path)]
    assert [int(e['label']) for e in examples] == [0, 1, 2]
    np.testing.assert_array_equal(examples[1]['image'], x[..., 1])
