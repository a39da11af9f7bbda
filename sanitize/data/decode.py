"""Decode one image cell into a fixed-shape uint8 array.

Nothing here raises :class:`~sanitize.errors.InputError`: a cell that cannot be turned into
an image raises ``ValueError`` and the read stage sets the row aside as unreadable.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import warnings
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

# Modes Pillow uses for single-band images; everything else is treated as colour.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) into a (channels, size, size) uint8 array.

    Images of another shape are resized (bilinear) to size x size, so non-square images are
    stretched. Alpha is dropped; palette, CMYK and other modes are converted.

    Parameters
    ----------
    data : bytes
        An encoded image file.
    size : int
        Side of the output in pixels; other shapes are resized (bilinear).
    channels : int
        1 (converted to Pillow mode "L") or 3 (mode "RGB").

    Returns
    -------
    ndarray of shape (channels, size, size), dtype uint8

    Raises
    ------
    ValueError
        The bytes are not a decodable image.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    image = _open(data)
    try:
        image = _convert(image, "L" if channels == 1 else "RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - Pillow codecs raise many types
        raise ValueError(f"cannot decode image: {exc}") from None
    if channels == 1:
        return array[None, :, :].copy()
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_many(
    payloads: list[bytes | None], size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decode several images at once (the unit of work of a decode worker process).

    Returns
    -------
    pixels : ndarray of shape (len(payloads), channels, size, size), uint8
        Zeros where a payload is None or cannot be decoded.
    ok : ndarray of shape (len(payloads),), bool
    """
    pixels = np.zeros((len(payloads), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(payloads), dtype=bool)
    for i, payload in enumerate(payloads):
        if payload is None:
            continue
        try:
            pixels[i] = decode_image(payload, size, channels)
        except ValueError:
            continue
        ok[i] = True
    return pixels, ok


def probe_image(data: bytes) -> tuple[int, int]:
    """(channels, size) an image's header suggests: 1 for grey modes else 3, max(width, height).

    Raises
    ------
    ValueError
        The bytes are not a decodable image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # the header only: no pixel decoded
                mode, size = image.mode, image.size
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ...
        raise ValueError(f"cannot read image header: {exc}") from None
    return (1 if mode in GREY_MODES else 3), max(size)


class PathRefused(ValueError):
    """An image path that would leave the source's location; it is never opened."""


def image_bytes(
    cell: Any,
    *,
    filesystem: fsspec.AbstractFileSystem | None = None,
    base_dir: str | None = None,
    allow_external: bool = False,
) -> bytes:
    """Encoded bytes of one cell of an image column.

    The path of a Hugging Face image struct is read only when its bytes are null. A path must
    stay inside ``base_dir`` (see :func:`confined_path`) unless ``allow_external``, which
    reads it as it is written: absolute, outside it, or a URL that fsspec opens (a network
    fetch).

    Parameters
    ----------
    cell : dict, bytes or str
        A Hugging Face image struct ``{"bytes": ..., "path": ...}``, raw bytes, or a path string.
    filesystem : fsspec.AbstractFileSystem, optional
        Filesystem of the source; paths resolve on it (without one, on the local one).
    base_dir : str, optional
        The source's directory: paths resolve against it; None: a path is read as it is written.
    allow_external : bool, default=False
        Read paths as they are written even with a ``base_dir`` (absolute, outside it, a URL).

    Raises
    ------
    PathRefused
        The path leaves ``base_dir``; it was not opened.
    ValueError
        The cell is null, holds neither bytes nor a path, or its path cannot be read.
    """
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return bytes(cell["bytes"])
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    if isinstance(cell, str) and cell:
        fs = filesystem or fsspec.filesystem("file")
        if base_dir is not None and not allow_external:
            return _read(fs, confined_path(cell, fs, base_dir), cell)
        return _read_anywhere(cell, fs, base_dir)
    raise ValueError("image cell holds neither bytes nor a path")


def confined_path(path: str, fs: fsspec.AbstractFileSystem, root: str) -> str:
    """``path`` resolved against the directory ``root`` on ``fs``, never leaving it.

    Raises
    ------
    PathRefused
        ``path`` names a protocol (``ftp://``, ``file://``, ...), is absolute, climbs out of
        ``root`` with ``..``, or, on a local filesystem, is a link to a file outside it.
    """
    if "://" in path or "::" in path:
        raise PathRefused(f"image path {path!r} names a protocol; {_RULE}")
    if posixpath.isabs(path):
        raise PathRefused(f"image path {path!r} is absolute; {_RULE}")
    root = posixpath.normpath(root)
    joined = posixpath.normpath(posixpath.join(root, path))
    if not _inside(joined, root):
        raise PathRefused(f"image path {path!r} leaves the source's directory; {_RULE}")
    if isinstance(fs, LocalFileSystem) and not _inside(
        os.path.realpath(joined), os.path.realpath(root)
    ):
        raise PathRefused(f"image path {path!r} links out of the source's directory; {_RULE}")
    return joined


_RULE = "paths resolve inside the source (--allow-external-paths reads it)"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _read_anywhere(path: str, fs: fsspec.AbstractFileSystem, base_dir: str | None) -> bytes:
    if "://" in path:
        try:
            with fsspec.open(path, "rb") as fh:
                return fh.read()
        except Exception as exc:  # noqa: BLE001 - any filesystem error makes the row unreadable
            raise ValueError(f"cannot read image path {path!r}: {exc}") from None
    if not posixpath.isabs(path) and base_dir is not None:
        return _read(fs, posixpath.join(base_dir, path), path)
    return _read(fs, path, path)


def special_file(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether ``path`` is, on a local filesystem, something other than a regular file (a
    FIFO, a socket, a device), which is never opened: reading a FIFO blocks forever."""
    if not isinstance(fs, LocalFileSystem):
        return False
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # missing, or a dangling link: reading it fails at once
        return False


def _read(fs: fsspec.AbstractFileSystem, resolved: str, path: str) -> bytes:
    if special_file(fs, resolved):
        raise ValueError(f"image path {path!r} is not a regular file")
    try:
        return fs.cat_file(resolved)
    except Exception as exc:  # noqa: BLE001 - any filesystem error makes the row unreadable
        raise ValueError(f"cannot read image path {path!r}: {exc}") from None


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS (89 megapixels) and refuses twice that;
            # either is a row set aside, never hundreds of MB decoded for a thumbnail.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ...
        raise ValueError(f"cannot decode image: {exc}") from None
    return image


def _convert(image: Image.Image, mode: str) -> Image.Image:
    if image.mode in _WIDE_MODES:
        # Pillow's I/F -> L conversion clips at 255, which would saturate 16-bit images;
        # values above 255 are taken as 16-bit, a float image with max <= 1 as [0, 1].
        values = np.asarray(image, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        if peak > 255:
            values = values * (255.0 / 65535.0)
        elif image.mode == "F" and peak <= 1.0:
            values = values * 255.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey)
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == mode else image.convert(mode)
