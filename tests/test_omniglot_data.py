"""The Omniglot loader: the offline copy decodes to the right array, bad archives fail clearly,
downloads are checked against their MD5 (with a fake server: nothing touches the network)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from metarl.supervised import omniglot_data
from metarl.supervised.omniglot_data import (
    OmniglotDataError,
    download_omniglot,
    load_omniglot,
)

from omniglot_fixtures import OMNIGLOT_ROOT, needs_omniglot


@needs_omniglot
def test_offline_copy_decodes_to_all_characters_and_is_cached(omniglot_images, omniglot_cache):
    images = omniglot_images
    assert images.images.shape == (1623, 20, 28, 28) and images.images.dtype == np.uint8
    assert len(images.characters) == len(set(images.characters)) == 1623
    assert sum(c.startswith("images_background/") for c in images.characters) == 964
    assert images.characters[0] == "images_background/Alphabet_of_the_Magi/character01"
    # ink is bright on a dark background: a stroke covers a minority of the pixels
    ink = (images.images > 127).mean()
    assert 0.03 < ink < 0.3
    assert (images.images.reshape(1623 * 20, -1).max(axis=1) > 100).all()  # no blank image
    cached = list(Path(omniglot_cache).glob("omniglot-28px-*.npz"))
    assert len(cached) == 1
    again = load_omniglot(OMNIGLOT_ROOT, cache_dir=omniglot_cache)
    assert np.array_equal(again.images, images.images) and again.characters == images.characters


def test_missing_archives_say_what_is_expected_and_where(tmp_path):
    with pytest.raises(OmniglotDataError, match=r"images_background\.zip.*964 characters"):
        load_omniglot(tmp_path, cache_dir=tmp_path / "cache")


@needs_omniglot
def test_truncated_archive_is_reported(tmp_path):
    data = (OMNIGLOT_ROOT / "images_background.zip").read_bytes()
    (tmp_path / "images_background.zip").write_bytes(data[: len(data) // 2])
    shutil.copy(OMNIGLOT_ROOT / "images_evaluation.zip", tmp_path)
    with pytest.raises(OmniglotDataError, match="truncated"):
        load_omniglot(tmp_path, cache_dir=tmp_path / "cache")


@needs_omniglot
def test_checksum_list_beside_the_archives_is_enforced(tmp_path):
    for name in ("images_background.zip", "images_evaluation.zip"):
        shutil.copy(OMNIGLOT_ROOT / name, tmp_path)
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  images_background.zip\n")
    with pytest.raises(OmniglotDataError, match="SHA-256"):
        load_omniglot(tmp_path, cache_dir=tmp_path / "cache")


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (105, 105), 1).save(buffer, format="PNG")
    return buffer.getvalue()


def test_wrong_archive_contents_are_reported(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:
        for drawer in range(1, 21):
            zf.writestr(f"images_background/Latin/character01/0001_{drawer:02d}.png", _png())
    with pytest.raises(OmniglotDataError,
                       match=r"found 1 characters\. Expected images_background\.zip"):
        load_omniglot(tmp_path, cache_dir=tmp_path / "cache")


def _one_character_archive(path: Path, drawing, compression=zipfile.ZIP_STORED) -> None:
    """An images_background.zip of one character whose first drawing is ``drawing``."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for drawer in range(1, 21):
            zf.writestr(f"images_background/Latin/character01/0001_{drawer:02d}.png",
                        drawing if drawer == 1 else _png())


def test_an_undecodable_drawing_is_a_data_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(omniglot_data.ARCHIVES, "images_background",
                        {**omniglot_data.ARCHIVES["images_background"], "characters": 1})
    _one_character_archive(tmp_path / "images_background.zip", b"not a png")
    with pytest.raises(OmniglotDataError, match=r"images_background/Latin/character01/"
                                                r"0001_01\.png in .*images_background\.zip is "
                                                r"not a readable image"):
        load_omniglot(tmp_path, cache_dir=tmp_path / "cache")
    unpacked = tmp_path / "unpacked" / "images_background"
    with zipfile.ZipFile(tmp_path / "images_background.zip") as zf:
        zf.extractall(tmp_path / "unpacked")
    (unpacked / "Latin" / "character01" / "0001_01.png").write_bytes(b"")
    with pytest.raises(OmniglotDataError, match=r"0001_01\.png is not a readable image"):
        load_omniglot(tmp_path / "unpacked", cache_dir=tmp_path / "cache")


def test_a_corrupt_deflate_stream_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setitem(omniglot_data.ARCHIVES, "images_background",
                        {**omniglot_data.ARCHIVES["images_background"], "characters": 1})
    archive = tmp_path / "images_background.zip"
    _one_character_archive(archive, _png(), compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(archive) as zf:
        first = zf.infolist()[0]
    data = bytearray(archive.read_bytes())
    header = first.header_offset  # local header: 30 bytes, then the name and extra field
    name_length = int.from_bytes(data[header + 26:header + 28], "little")
    extra_length = int.from_bytes(data[header + 28:header + 30], "little")
    data[header + 30 + name_length + extra_length] = 0xFF  # a deflate block of invalid type
    archive.write_bytes(bytes(data))
    with pytest.raises(OmniglotDataError, match=r"images_background\.zip cannot be read "
                                                r"\(Error -3 while decompressing"):
        load_omniglot(tmp_path, cache_dir=tmp_path / "cache")


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_checks_the_md5_and_keeps_nothing_bad(tmp_path, monkeypatch):
    payload = b"not the omniglot archive"
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(omniglot_data.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(OmniglotDataError, match="MD5"):
        download_omniglot(tmp_path)
    assert requested == ["https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
                         "images_background.zip"]
    assert list(tmp_path.iterdir()) == []  # no partial or wrong file left behind

    good = {name: {**info, "md5": hashlib.md5(payload).hexdigest()}
            for name, info in omniglot_data.ARCHIVES.items()}
    monkeypatch.setattr(omniglot_data, "ARCHIVES", good)
    previous = os.umask(0o002)
    try:
        download_omniglot(tmp_path)
    finally:
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images_background.zip",
                                                          "images_evaluation.zip"]
    assert (tmp_path / "images_background.zip").read_bytes() == payload
    # a data root shared by a team stays readable to it (mkstemp alone makes files 0600)
    assert all(p.stat().st_mode & 0o777 == 0o664 for p in tmp_path.iterdir())


def _drawing(row: int) -> bytes:
    """A 105 x 105 PNG, white with a black bar across rows ``row`` to ``row + 14``."""
    from PIL import Image

    image = Image.new("L", (105, 105), 255)
    image.paste(0, (0, row, 105, row + 15))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


CHARACTERS = {"images_background": "Latin/character01", "images_evaluation": "Greek/character01"}


def _tiny_omniglot(root: Path, monkeypatch: pytest.MonkeyPatch, rows=None, drawers: int = 20,
                   unpacked: bool = False) -> Path:
    """Both archives with one character each (the loader told to expect that), drawer d's
    drawing a bar at row ``rows[archive] + d``; unpacked into folders if asked."""
    for name in CHARACTERS:
        monkeypatch.setitem(omniglot_data.ARCHIVES, name,
                            {**omniglot_data.ARCHIVES[name], "characters": 1})
    monkeypatch.setattr(omniglot_data, "TOTAL_CHARACTERS", 2)
    rows = rows or {"images_background": 10, "images_evaluation": 50}
    root.mkdir(parents=True, exist_ok=True)
    for name, character in CHARACTERS.items():
        members = {f"{name}/{character}/0001_{d:02d}.png": _drawing(rows[name] + d)
                   for d in range(1, drawers + 1)}
        if unpacked:
            for member, data in members.items():
                (root / member).parent.mkdir(parents=True, exist_ok=True)
                (root / member).write_bytes(data)
        else:
            with zipfile.ZipFile(root / f"{name}.zip", "w") as zf:
                for member, data in members.items():
                    zf.writestr(member, data)
    return root


def _bar_rows(images: np.ndarray) -> list[int]:
    """The first inked row (of 28) of each image, character-major."""
    return [int(np.argmax(image.max(axis=1) > 127)) for image in images.reshape(-1, 28, 28)]


def test_tiny_archives_decode_to_named_characters_with_ink_bright(tmp_path, monkeypatch):
    root = _tiny_omniglot(tmp_path / "data", monkeypatch)
    images = load_omniglot(root, cache_dir=tmp_path / "cache")
    assert images.characters == ("images_background/Latin/character01",
                                 "images_evaluation/Greek/character01")
    assert images.images.shape == (2, 20, 28, 28)
    # drawer d's bar starts at row 10 + d (or 50 + d) of 105: row (10 + d) · 28 / 105 of 28
    rows = _bar_rows(images.images)
    assert rows[0] < rows[19] and rows[20] < rows[39] and rows[19] < rows[20]
    assert images.images[0, 0, 0].max() < 10 and images.images[0, 0, 4].min() > 200


def test_the_cache_is_rebuilt_when_an_archive_changes_or_is_unreadable(tmp_path, monkeypatch):
    import os

    root = _tiny_omniglot(tmp_path / "data", monkeypatch)
    before = load_omniglot(root, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").iterdir()
    cache.write_bytes(b"garbage")  # unreadable: rebuilt from the archives
    again = load_omniglot(root, cache_dir=tmp_path / "cache")
    assert np.array_equal(again.images, before.images)
    _tiny_omniglot(root, monkeypatch, rows={"images_background": 70, "images_evaluation": 50})
    os.utime(root / "images_background.zip", (1e9, 1e9))
    after = load_omniglot(root, cache_dir=tmp_path / "cache")
    assert _bar_rows(after.images)[:20] != _bar_rows(before.images)[:20]


def test_unpacked_folders_are_read_before_the_zips_and_their_changes_seen(tmp_path,
                                                                         monkeypatch):
    import os

    root = _tiny_omniglot(tmp_path / "data", monkeypatch, unpacked=True)
    for name in CHARACTERS:
        (root / f"{name}.zip").write_bytes(b"a leftover partial copy")
    before = load_omniglot(root, cache_dir=tmp_path / "cache")
    drawing = root / "images_background" / "Latin" / "character01" / "0001_01.png"
    drawing.write_bytes(_drawing(80))
    os.utime(drawing, (1e9, 1e9))
    after = load_omniglot(root, cache_dir=tmp_path / "cache")
    assert _bar_rows(after.images)[0] > _bar_rows(before.images)[0]
    assert _bar_rows(after.images)[1:] == _bar_rows(before.images)[1:]


def test_a_character_missing_a_drawing_is_reported(tmp_path, monkeypatch):
    root = _tiny_omniglot(tmp_path / "data", monkeypatch, drawers=19)
    with pytest.raises(OmniglotDataError, match=r"1 characters without 20 drawings, e\.g\. "
                                                r"images_background/Latin/character01"):
        load_omniglot(root, cache_dir=tmp_path / "cache")


def test_a_binary_mode_checksum_line_is_enforced_too(tmp_path, monkeypatch):
    root = _tiny_omniglot(tmp_path / "data", monkeypatch)
    (root / "SHA256SUMS").write_text(f"{'0' * 64} *images_evaluation.zip\n")  # sha256sum -b
    with pytest.raises(OmniglotDataError, match=r"images_evaluation\.zip has SHA-256"):
        load_omniglot(root, cache_dir=tmp_path / "cache")


def test_download_fetches_only_missing_archives_and_load_can_ask_for_it(tmp_path,
                                                                        monkeypatch):
    source = _tiny_omniglot(tmp_path / "source", monkeypatch)
    payloads = {name: (source / f"{name}.zip").read_bytes() for name in CHARACTERS}
    for name, payload in payloads.items():
        monkeypatch.setitem(omniglot_data.ARCHIVES, name, {
            **omniglot_data.ARCHIVES[name], "md5": hashlib.md5(payload).hexdigest()})
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url.rsplit("/", 1)[1])
        return _FakeResponse(payloads[url.rsplit("/", 1)[1][:-len(".zip")]])

    monkeypatch.setattr(omniglot_data.urllib.request, "urlopen", fake_urlopen)
    download_omniglot(source)  # both there already
    assert requested == []
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(source / "images_evaluation.zip", root)
    images = load_omniglot(root, download=True, cache_dir=tmp_path / "cache")
    assert requested == ["images_background.zip"] and images.images.shape == (2, 20, 28, 28)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_the_cache_gets_the_mode_a_plain_open_would_give(tmp_path, monkeypatch, umask, mode):
    """A cache_dir shared by a team stays readable to it (mkstemp alone makes files 0600)."""
    import os

    root = _tiny_omniglot(tmp_path / "data", monkeypatch)
    previous = os.umask(umask)
    try:
        load_omniglot(root, cache_dir=tmp_path / "cache")
    finally:
        os.umask(previous)
    (cache,) = (tmp_path / "cache").iterdir()
    assert cache.stat().st_mode & 0o777 == mode


def test_downscaling_keeps_a_thin_strokes_ink():
    """105 px drawings shrink to 28 px with an antialiasing filter: a one-pixel stroke that
    falls between the pixels a nearest-neighbour resize samples still shows, with about its
    share of ink (inverted: ink is bright)."""
    from PIL import Image

    drawing = np.full((105, 105), 255, dtype=np.uint8)
    drawing[:, 52] = 0  # a black vertical stroke, 1/105 of the image
    buffer = io.BytesIO()
    Image.fromarray(drawing).save(buffer, format="PNG")
    small = omniglot_data._decode(buffer.getvalue(), 28)
    assert small.shape == (28, 28) and small.dtype == np.uint8
    assert small[:, :10].max() == 0 and small[:, 18:].max() == 0  # ink only near x=52/105·28
    assert small.astype(float).mean() / 255 == pytest.approx(1 / 105, rel=0.35)
