"""The README and docs/ say what the code does: the names they list exist, their links and
images point at files that exist, the README stays short. (Their commands and the README's
Python block run in test_documented_commands.py.)"""

import importlib
import os
import re

import pytest

from conftest import ROOT

DOCS = os.path.join(ROOT, 'docs')
PAGES = [os.path.join(ROOT, 'README.md')] + sorted(
    os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith('.md'))


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def rendered(text):
    """What GitHub renders as links: the text without HTML comments and fenced code."""
    text = re.sub(r'<!--.*?-->', '', text, flags=re.S)
    return re.sub(r'^ *```.*?^ *```', '', text, flags=re.S | re.M)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r'[`*_]', '', heading.strip().lower())
    return re.sub(r'[^\w\- ]', '', heading).replace(' ', '-')


def anchors(path):
    return {slug(m.group(1)) for m in re.finditer(r'^#+ (.+)$', rendered(read(path)), re.M)}


def links(path):
    """(target, is_image) of every Markdown link and image on a page."""
    for m in re.finditer(r'(!?)\[[^\]]*\]\(([^)\s]+)\)', rendered(read(path))):
        yield m.group(2), bool(m.group(1))


def section(text, heading):
    m = re.search(r'^## %s\n(.*?)(?=^## |\Z)' % re.escape(heading), text, re.S | re.M)
    assert m, 'no section "## %s"' % heading
    return m.group(1)


def official_name_rows():
    """(official name cell, our names) per row of docs/official.md's official-name table."""
    rows = []
    for line in section(read(os.path.join(DOCS, 'official.md')), 'The official names').splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) != 2 or not line.startswith('|') or set(cells[1]) <= set('-'):
            continue
        if cells[0] == 'official':
            continue
        names = re.findall(r'`([a-z_]+(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`', cells[1])
        rows.append((cells[0], names))
    return rows


def test_every_name_of_the_official_name_table_exists():
    rows = official_name_rows()
    assert len(rows) >= 20, rows
    for official, names in rows:
        assert names, 'row %s names nothing of ours' % official
        for name in names:
            module, *attrs = name.split('.')
            obj = importlib.import_module('pixel_cnn_pp.' + module)
            for attr in attrs:
                assert hasattr(obj, attr), '%s (for the official %s) does not exist' % (name, official)
                obj = getattr(obj, attr)


def test_official_table_parser_sees_a_wrong_name():
    """The table test is not vacuous: a name that does not exist (the old table's nn.conv2d)
    is caught by the same lookup."""
    assert not hasattr(importlib.import_module('pixel_cnn_pp.nn'), 'conv2d')
    assert ('`conv2d`', ['nn.Conv2d']) in official_name_rows()


@pytest.mark.parametrize('page', PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_relative_links_and_images_exist(page):
    for target, _ in links(page):
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        path = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        assert os.path.exists(path), '%s links to %s, which does not exist' % (page, target)
        if anchor and path.endswith('.md'):
            assert anchor in anchors(path), '%s links to %s: no such heading' % (page, target)


def test_readme_is_short_shows_its_images_and_links_every_docs_page():
    readme = read(os.path.join(ROOT, 'README.md'))
    assert len(readme.splitlines()) <= 200
    images = [t for t, is_image in links(os.path.join(ROOT, 'README.md')) if is_image]
    assert images
    for image in images:
        path = os.path.join(ROOT, image)
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n', image
        assert os.path.getsize(path) < 200_000, image
    linked = {os.path.normpath(t.partition('#')[0]) for t, _ in links(os.path.join(ROOT, 'README.md'))}
    for page in PAGES[1:]:
        assert os.path.relpath(page, ROOT) in linked, '%s is not linked from the README' % page
