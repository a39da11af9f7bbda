"""Where the nightly ingestion reads and writes: landing partitions, destination, done-ledger.

Prefect-free; :mod:`flows.ingest_flow` wires it into a flow.

Landing location (a local directory or an fsspec URI)
    Every top-level entry is a partition: a ``.parquet`` file, or a directory whose top
    level holds ``.parquet`` files (read together as one source). Names starting with ``.``
    or ``_`` are ignored, so uploads in progress under a hidden name and ``_SUCCESS``
    markers are not taken for partitions. A partition is identified by its content
    fingerprint (:meth:`sanitize.data.source.Source.fingerprint`), not its name: a renamed
    copy of a done partition is done, a changed file is new.

Destination (a local directory or an fsspec URI)
    ``DEST/<partition>/`` holds one partition's outputs (``<partition>`` is its landing name
    without ``.parquet``). ``DEST/_ledger/<fingerprint>.json`` says that content is done: it
    is written after the outputs are in place, and the entry of the content a
    ``DEST/<partition>/`` held is removed before that directory is replaced, so a crash at
    any point re-does a partition rather than loses it.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from sanitize.config import DataConfig
from sanitize.data.source import ignored_name, open_source, parquet_files
from sanitize.errors import InputError, SanitizeError
from sanitize.pipeline.paths import REPORT_JSON

PARQUET_SUFFIX = ".parquet"
LEDGER_DIR = "_ledger"
STAGING_DIR = ".staging"


@dataclass(frozen=True)
class Partition:
    """One landing partition.

    Attributes
    ----------
    name : str
        Landing name without ``.parquet``; the destination subdirectory.
    uri : str
        Its location, as :func:`sanitize.data.source.open_source` takes it.
    fingerprint : str or None
        Content fingerprint; None when the partition cannot be opened.
    rows : int or None
        Rows it holds, from the Parquet metadata.
    error : str or None
        One-line reason it cannot be opened, else None.
    """

    name: str
    uri: str
    fingerprint: str | None = None
    rows: int | None = None
    error: str | None = None


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message; its type name when it has none.

    Errors that ``sanitize`` raises on purpose already name the problem; others are
    prefixed with their type (``ArrowInvalid: ...``) so the reason stays readable.
    """
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, SanitizeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _location(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path.rstrip("/") or path


def _uri_of(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A local path stays a plain path; elsewhere the protocol is put back (``s3://...``)."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def discover_partitions(landing: str, data: DataConfig) -> list[Partition]:
    """Every partition of the landing location, in name order, each opened and fingerprinted.

    A partition that cannot be opened (a corrupt file, mismatched schemas, no rows) comes
    back with ``error`` set rather than raising, so one bad partition does not hide the
    others; so does the second of two entries that map to one name (``a.parquet`` and
    ``a/``).

    Raises
    ------
    InputError
        The landing location does not exist or is not a directory.
    """
    fs, root = _location(landing)
    if not fs.isdir(root):
        raise InputError(f"landing location not found or not a directory: {landing}")
    entries: list[tuple[str, str]] = []
    for info in fs.ls(root, detail=True):
        path = info["name"].rstrip("/")
        base = posixpath.basename(path)
        if ignored_name(base):
            continue
        if info["type"] == "file" and base.endswith(PARQUET_SUFFIX):
            entries.append((base[: -len(PARQUET_SUFFIX)], path))
        elif info["type"] == "directory" and parquet_files(fs, path):
            entries.append((base, path))
    found: list[Partition] = []
    names: set[str] = set()
    for name, path in sorted(entries):
        uri = _uri_of(fs, path)
        if name in names:
            found.append(Partition(name, uri, error=f"another partition is also named {name!r}"))
            continue
        names.add(name)
        found.append(_open(name, uri, data))
    return found


def _open(name: str, uri: str, data: DataConfig) -> Partition:
    try:
        source = open_source(uri, data)
        return Partition(name, uri, fingerprint=source.fingerprint(), rows=source.num_rows)
    except Exception as exc:  # noqa: BLE001 - any unreadable partition is reported, not raised
        return Partition(name, uri, error=one_line(exc))


class Destination:
    """The destination root: published partitions and the done-ledger.

    Parameters
    ----------
    uri : str
        A local directory or an fsspec URI; created when missing.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = _location(uri)
        self.fs.makedirs(self._path(LEDGER_DIR), exist_ok=True)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        """Location of ``DEST/<parts>``: a plain path when local, else a URI."""
        return _uri_of(self.fs, self._path(*parts))

    def url_of(self, *parts: str) -> str:
        """A link to ``DEST/<parts>``: ``file://`` when local, else the fsspec URI."""
        if self.is_local:
            return Path(self._path(*parts)).as_uri()
        return self.uri_of(*parts)

    def staging_dir(self, name: str, work_dir: str | None = None) -> Path:
        """A new local directory to run partition ``name`` in.

        Defaults to ``DEST/.staging`` for a local destination, so publishing is a rename;
        the system's temporary directory otherwise.
        """
        parent = work_dir or (self._path(STAGING_DIR) if self.is_local else None)
        if parent is not None:
            os.makedirs(parent, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}.", dir=parent))

    # the done-ledger
    def done(self, fingerprint: str) -> dict[str, Any] | None:
        """The ledger entry of ``fingerprint``, or None when that content is not done."""
        path = self._path(LEDGER_DIR, f"{fingerprint}.json")
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def record(self, fingerprint: str, entry: dict[str, Any]) -> None:
        """Write the ledger entry of ``fingerprint`` (whole or not at all)."""
        tmp = self._path(LEDGER_DIR, f".{fingerprint}.{uuid.uuid4().hex[:8]}.tmp")
        self.fs.pipe_file(tmp, json.dumps(entry, indent=2, sort_keys=True).encode())
        self.fs.mv(tmp, self._path(LEDGER_DIR, f"{fingerprint}.json"))

    def _forget_published(self, name: str) -> None:
        """Drop the ledger entry of the content ``DEST/<name>`` holds, before it is replaced."""
        try:
            report = json.loads(self.fs.cat_file(self._path(name, REPORT_JSON)))
        except (FileNotFoundError, ValueError):
            return
        fingerprint = (report.get("source") or {}).get("fingerprint")
        entry = self._path(LEDGER_DIR, f"{fingerprint}.json")
        if fingerprint and self.fs.exists(entry):
            self.fs.rm(entry)

    # publishing
    def publish(self, local_dir: str | Path, name: str) -> list[str]:
        """Move the visible files of ``local_dir`` to ``DEST/<name>/``, replacing what was there.

        The files are gathered under a hidden temporary name first and the directory is
        renamed into place, so readers see the old outputs or the new ones, never a mix (on
        object stores, where a rename is a copy, a reader may briefly see neither). Hidden
        files (``.work``, locks) are left behind.

        Returns
        -------
        list of str
            The published files, relative to ``DEST/<name>/``.
        """
        local_dir = Path(local_dir)
        files = sorted(
            p.relative_to(local_dir).as_posix()
            for p in local_dir.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(local_dir).parts)
        )
        token = uuid.uuid4().hex[:8]
        staged = self._path(f".{name}.{token}.tmp")
        for rel in files:
            target = posixpath.join(staged, rel)
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            if self.is_local:
                self.fs.mv(str(local_dir / rel), target)  # a rename on one filesystem
            else:
                self.fs.put_file(str(local_dir / rel), target)
        final = self._path(name)
        self._forget_published(name)
        if self.fs.exists(final):
            old = self._path(f".{name}.{token}.old")
            self.fs.mv(final, old, recursive=True)
            self.fs.mv(staged, final, recursive=True)
            self.fs.rm(old, recursive=True)
        else:
            self.fs.mv(staged, final, recursive=True)
        return files


def publish_partition(
    local_dir: str, dest: str, name: str, fingerprint: str, entry: dict[str, Any]
) -> dict[str, Any]:
    """Publish a finished run to ``DEST/<name>/``, then record ``fingerprint`` as done.

    Returns the ledger entry written: ``entry`` plus ``name``, ``fingerprint``,
    ``destination`` and ``files``.
    """
    destination = Destination(dest)
    files = destination.publish(local_dir, name)
    record = {
        **entry,
        "name": name,
        "fingerprint": fingerprint,
        "destination": destination.uri_of(name),
        "files": files,
    }
    destination.record(fingerprint, record)
    return record
