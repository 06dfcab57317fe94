"""tensorflow-datasets sets in a data_dir, the one way every script reads one (load): the
copy prepared there, else a download, which

- fails at once, naming the local routes, when the set's source does not answer: offline,
  tensorflow-datasets retries each file for about 3.5 minutes before it gives up;
- removes what it created in data_dir when it fails (files.Created);
- shows no progress bars or warnings of tensorflow-datasets unless verbose.

A missing module is a DataError saying so (not a failed download); a programming error is
not caught."""

import contextlib
import logging
import urllib.error
import urllib.request

import numpy as np

from pixel_cnn_pp import files
from pixel_cnn_pp.datafiles import DataError, first_line

PROBE_SECONDS = 10  # how long the probe of a set's source waits for an answer


def errors():
    """The exceptions by which tensorflow-datasets says a set is unknown, not there, or could
    not be downloaded, extracted or read (a failed download, a full disk, a wrong checksum),
    as opposed to a programming error or a missing module, which are not caught."""
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import download_manager, extractor
    return (OSError, ValueError, AssertionError, tf.errors.OpError, tfds.download.DownloadError,
            download_manager.NonMatchingChecksumError, extractor.ExtractError)


def missing_dependency(e):
    """The DataError for a ModuleNotFoundError raised inside tensorflow-datasets: which module
    is missing, and that it is a dependency (not the network, not the data)."""
    return DataError('tensorflow-datasets needs the Python module %r, which is not installed: a '
                     'missing dependency (pip install -r requirements.txt installs it)' % e.name)


def reachable(url, timeout=PROBE_SECONDS):
    """None if url answers a HEAD request (through the proxy that https_proxy/http_proxy
    set, if any), else why not. A server that answers it does not do HEAD (405, 501)
    answers; 'not found' and a server error (which tensorflow-datasets retries for minutes)
    do not."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout).close()
        return None
    except urllib.error.HTTPError as e:
        return None if e.code in (405, 501) else 'HTTP %d %s' % (e.code, e.reason)
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
        return str(getattr(e, 'reason', e))


@contextlib.contextmanager
def quiet(verbose=False):
    """tensorflow-datasets without its progress bars and warnings (absl's, and urllib3's
    retries) inside, unless verbose; as they were after."""
    if verbose:
        yield
        return
    from absl import logging as absl_logging
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import tqdm_utils
    bars, verbosity = getattr(tqdm_utils, '_active', True), absl_logging.get_verbosity()
    retries = logging.getLogger('urllib3')
    retries_level = retries.level
    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.ERROR)
    retries.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tfds.display_progress_bar(bars)
        absl_logging.set_verbosity(verbosity)
        retries.setLevel(retries_level)


def _read(name, splits, data_dir):
    """The splits of a set prepared in data_dir, as dicts of arrays ('image', 'label', ...);
    AssertionError if it is not prepared there."""
    import tensorflow_datasets as tfds
    arrays = []
    for split, ds in zip(splits, tfds.load(name, split=list(splits), data_dir=data_dir, download=False)):
        batches = list(tfds.as_numpy(ds.batch(4096)))
        if not batches:
            raise DataError('%s has no images in its split %s' % (name, split))
        arrays.append({k: np.concatenate([b[k] for b in batches]) for k in batches[0]})
    return arrays


def _prepare(builder, where):
    """builder.download_and_prepare(), and if it fails (or is interrupted) what it created
    in the data_dir `where` removed again."""
    created = files.Created(where, deep=True)
    try:
        builder.download_and_prepare()
    except BaseException:
        created.remove()
        raise


def load(name, splits, data_dir=None, routes=(), verbose=False, download=True, route_values=None):
    """The splits (e.g. ['train', 'test']) of tensorflow-datasets' set `name` (NAME or
    NAME/CONFIG), as a list of dicts of arrays ('image', 'label' if it has labels): the
    copy prepared in data_dir (None: tensorflow-datasets' default), else downloaded and
    prepared there if the set's source answers, else a DataError naming the local `routes`
    (phrases saying where else the images can come from, whose settings are placeholders
    of DataError: {data_dir:name}, and route_values' others). download=False: None if it is
    not prepared there."""
    instead = '; use local data instead: %s' % ', or '.join(routes) if routes else ''
    values = dict(route_values or {})
    where = data_dir
    try:
        import tensorflow_datasets as tfds
        where = data_dir or tfds.core.constants.get_default_data_dir()
        with quiet(verbose):
            try:
                return _read(name, splits, data_dir)
            except AssertionError:  # "could not find data in data_dir": not prepared there
                if not download:
                    return None
            builder = tfds.builder(name, data_dir=data_dir)
            url = next(iter(builder.url_infos or ()), None)  # none: a set of manual downloads
            why = url and reachable(url)
            if why:
                raise DataError('%s is not in {data_dir} and cannot be downloaded (%s: %s)%s'
                                % (name, url, why, instead), data_dir=where, **values)
            try:
                _prepare(builder, where)
            except errors() as e:  # a failed download, an unwritable folder, a full disk
                raise DataError('tensorflow-datasets could not download %s into {data_dir} (%s)%s'
                                % (name, first_line(e), instead), data_dir=where, **values) from None
            return _read(name, splits, data_dir)
    except DataError:
        raise
    except ModuleNotFoundError as e:
        raise missing_dependency(e) from e
    except errors() as e:  # an unknown name or split, a broken copy
        raise DataError('tensorflow-datasets could not load %s from {data_dir} (%s)'
                        % (name, first_line(e)), data_dir=where) from None


def _builder(name, data_dir):
    import tensorflow_datasets as tfds
    with quiet():
        return tfds.builder(name, data_dir=data_dir)


def splits(name, data_dir=None):
    """The split names of a set prepared in data_dir (load it first), or None when
    tensorflow-datasets does not say (a set it has not prepared, a mock)."""
    try:
        found = list(_builder(name, data_dir).info.splits.keys())
    except errors():
        return None
    return found or None


def label_names(name, data_dir=None):
    """The class names of a set's 'label' feature (a ClassLabel), or None."""
    import tensorflow_datasets as tfds
    try:
        features = _builder(name, data_dir).info.features
        feature = features['label'] if 'label' in features.keys() else None
    except errors():
        return None
    if isinstance(feature, tfds.features.ClassLabel) and feature.names:
        return tuple(str(n) for n in feature.names)
    return None
