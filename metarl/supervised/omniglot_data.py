"""Omniglot images: find or download the two archives, check them, decode once, cache.

The data set (Lake et al. 2015) is 1623 handwritten characters from 50 alphabets, each drawn
by 20 people, shipped as two archives: ``images_background.zip`` (964 characters) and
``images_evaluation.zip`` (659 characters), each unpacking to
``<archive>/<Alphabet>/characterNN/NNNN_DD.png`` (105 x 105, black ink on white).

:func:`load_omniglot` returns every image as one ``uint8`` array of shape
``(1623, 20, size, size)`` with ink = 255, decoded and resized once and then read from a
cache file, so that sampling tasks is array indexing rather than file reads.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarl.checkpoint import give_default_mode
from metarl.config import ConfigError

ARCHIVES: dict[str, dict[str, int | str]] = {
    # Canonical upstream archives (brendenlake/omniglot, folder python/).
    "images_background": {"characters": 964, "md5": "68d2efa1b9178cc56df9314c21c6e718",
                          "bytes": 9_464_212},
    "images_evaluation": {"characters": 659, "md5": "6b91aef0f799c5bb55b94e3f2daec811",
                          "bytes": 6_462_886},
}
DOWNLOAD_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}.zip"
DRAWERS = 20
TOTAL_CHARACTERS = sum(int(a["characters"]) for a in ARCHIVES.values())
CACHE_FORMAT = 1


class OmniglotDataError(ConfigError):
    """The Omniglot archives are missing, truncated or not what they should be (bad input:
    the CLI reports it and exits with code 2)."""


@dataclass(frozen=True)
class OmniglotImages:
    """All Omniglot characters as one array.

    Attributes:
        images: ``uint8 (1623, 20, size, size)``, ink = 255, background = 0; axis 1 is the
            drawer.
        characters: ``"<archive>/<Alphabet>/characterNN"`` for each row of ``images``, sorted.
    """

    images: np.ndarray
    characters: tuple[str, ...]

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metarl" / "omniglot"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected(name: str) -> str:
    info = ARCHIVES[name]
    return (f"{name}.zip from brendenlake/omniglot (folder python/): {info['characters']} "
            f"characters x {DRAWERS} PNGs, upstream MD5 {info['md5']}")


def download_omniglot(root: str | Path, *, url_template: str = DOWNLOAD_URL) -> None:
    """Download the canonical archives into ``root`` and check their published MD5s.

    Archives already present are left alone. Each download goes to a temporary file that
    replaces the target only after its MD5 matches, so an interrupted download leaves
    nothing behind.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, info in ARCHIVES.items():
        target = root / f"{name}.zip"
        if target.exists() or (root / name).is_dir():
            continue
        url = url_template.format(name=name)
        fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            give_default_mode(fd)  # a data root shared by a team stays readable to it
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            digest = md5_of(tmp)
            if digest != info["md5"]:
                raise OmniglotDataError(
                    f"downloaded {url} has MD5 {digest}, expected {info['md5']}; nothing was "
                    f"saved (retry, or place {name}.zip in {root} yourself)")
            tmp.replace(target)
        except (OSError, http.client.HTTPException) as error:
            raise OmniglotDataError(f"could not download {url}: {error!r}. Without internet, "
                                    f"put {name}.zip (or its unpacked folder) in {root}") from error
        finally:
            tmp.unlink(missing_ok=True)


def _sha256_manifest(root: Path) -> dict[str, str]:
    """``SHA256SUMS`` beside the archives (as in the offline copy), if there is one."""
    manifest = root / "SHA256SUMS"
    if not manifest.is_file():
        return {}
    sums = {}
    for line in manifest.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0]
    return sums


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise OmniglotDataError(
            f"{path} has SHA-256 {digest}, but {path.parent / 'SHA256SUMS'} lists {expected}: "
            f"the archive is truncated or replaced. Restore it (or delete it and download the "
            f"upstream {path.name} with data.download: true)")


def _character_of(member: str) -> str:
    return member.rsplit("/", 1)[0]


def _png_members(name: str, root: Path) -> tuple[str, list[str] | Path]:
    """Where archive ``name`` lives under ``root``: ("zip", members) or ("dir", folder)."""
    folder = root / name
    archive = root / f"{name}.zip"
    if folder.is_dir():
        return "dir", folder
    if not archive.is_file():
        raise OmniglotDataError(
            f"Omniglot not found: neither {archive} nor the folder {folder} exists. Expected "
            f"{_expected(name)}. Pass the folder that holds both archives, or set "
            f"data.download: true to fetch them when online")
    expected = _sha256_manifest(root).get(archive.name)
    if expected is not None:
        _check_sha256(archive, expected)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = sorted(n for n in zf.namelist() if n.endswith(".png"))
    except zipfile.BadZipFile as error:
        raise OmniglotDataError(f"{archive} is not a readable zip ({error}): truncated or not "
                                f"the right file. Expected {_expected(name)}. Delete it and "
                                "copy it again (or download it with data.download: true)"
                                ) from error
    return "zip", members


def _check_layout(name: str, files: list[str], where: Path) -> list[str]:
    """The sorted character folders of archive ``name``, after checking the counts."""
    by_character: dict[str, int] = {}
    for member in files:
        by_character[_character_of(member)] = by_character.get(_character_of(member), 0) + 1
    info = ARCHIVES[name]
    bad = {c: n for c, n in by_character.items() if n != DRAWERS}
    if len(by_character) != info["characters"] or bad:
        detail = (f"found {len(by_character)} characters" if not bad else
                  f"{len(bad)} characters without {DRAWERS} drawings, e.g. {next(iter(bad))}")
        raise OmniglotDataError(f"{where} does not look like Omniglot's {name}: {detail}. "
                                f"Expected {_expected(name)}")
    return sorted(by_character)


def _decode(data: bytes | Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        gray = image.convert("L")
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.LANCZOS)
        return 255 - np.asarray(gray, dtype=np.uint8)


def _decode_archive(name: str, root: Path, size: int) -> tuple[np.ndarray, list[str]]:
    kind, source = _png_members(name, root)
    if kind == "dir":
        assert isinstance(source, Path)
        paths = sorted(source.glob("*/*/*.png"))
        files = [f"{name}/{p.relative_to(source).as_posix()}" for p in paths]
        characters = _check_layout(name, files, source)
        blobs: list[bytes | Path] = list(paths)
    else:
        assert isinstance(source, list)
        characters = _check_layout(name, source, root / f"{name}.zip")
        files = source
        with zipfile.ZipFile(root / f"{name}.zip") as zf:
            try:
                blobs = [zf.read(member) for member in files]
            except (zipfile.BadZipFile, OSError, zlib.error) as error:
                raise OmniglotDataError(f"{root / f'{name}.zip'} cannot be read ({error}). "
                                        f"Expected {_expected(name)}") from error
    index = {c: i for i, c in enumerate(characters)}
    images = np.zeros((len(characters), DRAWERS, size, size), dtype=np.uint8)
    filled = np.zeros((len(characters),), dtype=np.int64)
    for member, blob in zip(files, blobs, strict=True):
        row = index[_character_of(member)]
        try:
            images[row, filled[row]] = _decode(blob, size)
        except (OSError, ValueError) as error:  # PIL.UnidentifiedImageError is an OSError
            where = blob if isinstance(blob, Path) else f"{member} in {root / f'{name}.zip'}"
            raise OmniglotDataError(f"{where} is not a readable image ({error}). Expected "
                                    f"{_expected(name)}; copy the data again") from error
        filled[row] += 1
    return images, characters


def _source_key(root: Path, size: int) -> dict[str, object]:
    """What the cache depends on: the image size and, for each archive, the source the loader
    reads (the unpacked folder before the zip): the zip's size and mtime, or the folder's
    PNG count, total size and newest mtime."""
    key: dict[str, object] = {"format": CACHE_FORMAT, "size": size}
    for name in ARCHIVES:
        folder, archive = root / name, root / f"{name}.zip"
        if folder.is_dir():
            stats = [p.stat() for p in folder.glob("*/*/*.png")]
            key[name] = ["dir", len(stats), sum(s.st_size for s in stats),
                         max((int(s.st_mtime) for s in stats), default=0)]
        elif archive.is_file():
            stat = archive.stat()
            key[name] = ["zip", stat.st_size, int(stat.st_mtime)]
    return key


def load_omniglot(root: str | Path, *, image_size: int = 28, download: bool = False,
                  cache_dir: str | Path | None = None) -> OmniglotImages:
    """All 1623 characters x 20 drawings, resized to ``image_size`` (LANCZOS), ink = 255.

    Args:
        root: the folder holding ``images_background.zip`` and ``images_evaluation.zip`` (or
            their unpacked folders of the same names).
        image_size: side length in pixels of the returned images.
        download: fetch the canonical archives into ``root`` first if they are missing.
        cache_dir: where the decoded array is kept (default ``$XDG_CACHE_HOME/metarl/omniglot``,
            else ``~/.cache/metarl/omniglot``);
            the first call decodes all 32,460 PNGs (about 10 s), later calls read one file.

    Raises:
        OmniglotDataError: an archive is missing, truncated, or has the wrong contents.
    """
    root = Path(root).expanduser()
    if download:
        download_omniglot(root)
    key = _source_key(root, image_size)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(json.dumps([str(root.resolve()), key]).encode()).hexdigest()[:16]
    cache_file = cache / f"omniglot-{image_size}px-{digest}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as stored:
                images = stored["images"]
                shape_ok = images.shape == (TOTAL_CHARACTERS, DRAWERS, image_size, image_size)
                if json.loads(str(stored["key"])) == key and shape_ok:
                    return OmniglotImages(images, tuple(str(c) for c in stored["characters"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
            pass  # an unreadable cache is rebuilt below
    parts, names = [], []
    for name in ARCHIVES:
        images, characters = _decode_archive(name, root, image_size)
        parts.append(images)
        names.extend(characters)
    result = OmniglotImages(np.concatenate(parts), tuple(names))
    _write_cache(cache_file, result, key)
    return result


def _write_cache(path: Path, data: OmniglotImages, key: dict[str, object]) -> None:
    """Write the decoded array atomically; a read-only cache location only costs the
    decoding time next run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".omniglot.", suffix=".npz")
    except OSError:
        return
    tmp = Path(tmp_name)
    try:
        give_default_mode(fd)  # a cache_dir shared by a team stays readable to it
        with os.fdopen(fd, "wb") as file:
            np.savez(file, images=data.images, characters=np.array(data.characters),
                     key=np.array(json.dumps(key)))
        tmp.replace(path)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
