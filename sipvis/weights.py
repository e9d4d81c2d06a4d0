"""Checkpoint registry, cache and downloader.

`--weights` of every model command goes through `resolve_weights`, which takes one of:

- a registry name from `weights/registry.toml` (`sipmask-r50-ytvis`, `demo`, ...): the file is
  looked up in the cache and downloaded into it on first use;
- an http(s) URL: downloaded into the cache under a folder keyed by the URL's hash;
- a local path (file or directory): used as it is.

The cache lives in `$SIPVIS_HOME` (default: the platform's user cache directory, e.g.
`~/.cache/sipvis`), weights under `<home>/weights/`. Downloads go to `<file>.part` first and resume
from where they stopped (HTTP Range), so an interrupted multi-hundred-MB download is not restarted.
A file is moved into place only once complete and checked: against the registry's sha256 when it is
known, otherwise its sha256 is recorded in `<file>.sha256` and verified on every later use.

Google Drive (where the authors' checkpoints live) answers large files with a "can't scan for
viruses" page; `download` reads the confirmation form on that page and requests the file again.
Only the standard library (`urllib`) is used for HTTP.

Converting the authors' mmdet-v1 `.pth` is not done here: `resolve_weights` returns the file and its
format, and `sipvis.checkpoint` loads it.
"""

from __future__ import annotations

import hashlib
import html.parser
import http.client
import http.cookiejar
import os
import re
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipvis import __version__
from sipvis.errors import SipvisError

# progress(label, bytes done, total bytes or None): called when the server answers and after every chunk
# received (`label`: the registry name or the file name). The CLI draws it (cli/_progress.DownloadBars).
DownloadProgress = Callable[[str, int, int | None], None]



def _bundled_folder() -> Path:
    """The repository's `weights/` folder: beside the package in a checkout or editable install, or
    installed as the `sipvis._bundled` package data by a regular (wheel) install."""
    checkout = Path(__file__).resolve().parent.parent / "weights"
    if (checkout / "registry.toml").is_file():
        return checkout
    from importlib.resources import files

    # a namespace package (no __init__.py): ask for a file in it to get a real filesystem path
    return Path(str(files("sipvis._bundled").joinpath("registry.toml"))).parent


# The registry shipped with the repository; tests point this at their own file.
REGISTRY_FILE = _bundled_folder() / "registry.toml"

# Google Drive endpoints. `SIPVIS_GDRIVE_URL` / `SIPVIS_GDRIVE_USERCONTENT_URL` override them (tests
# point them at a local server so they never touch the internet).
GDRIVE_URL = "https://drive.google.com/uc"
GDRIVE_USERCONTENT_URL = "https://drive.usercontent.google.com/download"

FORMATS = ("mmdet-v1", "sipvis")
TIMEOUT_S = 30.0  # per socket operation (connect, each read), not for the whole transfer
MAX_ATTEMPTS = 5  # transfers cut midway are resumed this many times within one call
RETRY_DELAY_S = 1.0  # grows linearly with the attempt number
_CHUNK = 1 << 20
_MAX_PAGE = 2 << 20  # an HTML page from Drive is a few kB; never read more than this of one

_ENTRY_FIELDS = {"name", "description", "format", "file", "url", "gdrive_id", "path", "sha256", "size", "default",
                 "config"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(SipvisError):
    """A download failed for a network reason (unreachable host, HTTP error, timeout, cut transfer).

    `reason` is the short cause (e.g. "HTTP 404 Not Found"), used to build higher-level messages.
    """

    def __init__(self, url: str, reason: str):
        super().__init__(f"Could not download {url}: {reason}")
        self.url = url
        self.reason = reason


class ChecksumError(SipvisError):
    """A downloaded or cached file does not have the expected sha256."""


@dataclass(frozen=True)
class Entry:
    """One checkpoint of the registry.

    Exactly one of `url`, `gdrive_id` (remote, cached under `weights_dir() / file`) and `path`
    (bundled, relative to the registry's folder) is set. `sha256` is "" when unknown.
    """

    name: str
    description: str
    format: str
    file: str
    url: str = ""
    gdrive_id: str = ""
    path: str = ""
    sha256: str = ""
    size: int | None = None
    default: bool = False
    config: str = ""  # the original's config name of an image model (`sipvis.model.families.OFFICIAL_CONFIGS`)
    root: Path = REGISTRY_FILE.parent  # folder of the registry file, base of `path`

    @property
    def is_local(self) -> bool:
        """True for a checkpoint bundled with the repository (nothing to download)."""
        return bool(self.path)

    @property
    def source_url(self) -> str:
        """Where a person downloads it by hand (a browser-friendly link for Drive files)."""
        if self.gdrive_id:
            return f"https://drive.google.com/file/d/{self.gdrive_id}/view"
        return self.url

    def local_path(self) -> Path:
        """Where the file is (bundled) or will be (cached) on this machine."""
        if self.is_local:
            return self.root / self.path
        return weights_dir() / self.file


@dataclass(frozen=True)
class ResolvedWeights:
    """A checkpoint on disk: `format` is "mmdet-v1", "sipvis" or "unknown" (to be sniffed by the loader);
    `sha256` is the checksum that resolving just verified the cached file against ("" for a local path or a
    bundled checkpoint): what identifies it without hashing it again."""

    path: Path
    format: str
    name: str | None = None
    sha256: str = ""


# ----------------------------------------------------------------------------- cache and registry


def cache_dir() -> Path:
    """The sipvis home: `$SIPVIS_HOME` if set, else the user cache dir (`platformdirs`). Weights are in `weights/`."""
    home = os.environ.get("SIPVIS_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sipvis"))


def weights_dir() -> Path:
    """Folder of cached weights: `cache_dir() / "weights"`."""
    return cache_dir() / "weights"


def registry() -> list[Entry]:
    """All entries of the registry file, in file order. A malformed registry raises `SipvisError`."""
    path = REGISTRY_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SipvisError(f"The weights registry {path} is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise SipvisError(f"The weights registry {path} is not valid TOML: {exc}") from None
    raw_entries = data.get("weights", [])
    if not isinstance(raw_entries, list):
        raise SipvisError(f"The weights registry {path} must hold [[weights]] tables")
    entries = [_parse_entry(raw, path, i) for i, raw in enumerate(raw_entries)]
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SipvisError(f"The weights registry {path} names {', '.join(duplicates)} more than once")
    defaults = [e.name for e in entries if e.default]
    if len(defaults) > 1:
        raise SipvisError(f"The weights registry {path} has several defaults: {', '.join(defaults)}")
    return entries


def _parse_entry(raw: Any, path: Path, index: int) -> Entry:
    where = f"{path}, entry {index + 1}"
    if not isinstance(raw, dict):
        raise SipvisError(f"{where}: expected a [[weights]] table")
    unknown = sorted(set(raw) - _ENTRY_FIELDS)
    if unknown:
        raise SipvisError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key in ("name", "description", "format", "file"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SipvisError(f"{where}: '{key}' must be a non-empty string")
    where = f"{path}, entry '{raw['name']}'"
    if raw["format"] not in FORMATS:
        raise SipvisError(f"{where}: format must be one of {', '.join(FORMATS)}, not '{raw['format']}'")
    sources = [key for key in ("url", "gdrive_id", "path") if raw.get(key)]
    if len(sources) != 1:
        raise SipvisError(f"{where}: give exactly one of url, gdrive_id, path")
    sha256 = str(raw.get("sha256", "")).lower()
    if sha256 and not _SHA256_RE.match(sha256):
        raise SipvisError(f"{where}: sha256 must be 64 hex digits or \"\"")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise SipvisError(f"{where}: size must be a number of bytes")
    if not isinstance(raw.get("default", False), bool):
        raise SipvisError(f"{where}: default must be true or false")
    if not isinstance(raw.get("config", ""), str):
        raise SipvisError(f"{where}: config must be a string (the original's config name)")
    return Entry(
        name=raw["name"],
        description=raw["description"],
        format=raw["format"],
        file=raw["file"],
        url=str(raw.get("url", "")),
        gdrive_id=str(raw.get("gdrive_id", "")),
        path=str(raw.get("path", "")),
        sha256=sha256,
        size=size,
        default=raw.get("default", False),
        config=raw.get("config", ""),
        root=path.parent,
    )


def find_entry(name: str) -> Entry | None:
    """The registry entry called `name`, or None."""
    return next((e for e in registry() if e.name == name), None)


def default_weights_name() -> str:
    """Name of the registry entry marked `default = true` (used when `--weights` is not given)."""
    for entry in registry():
        if entry.default:
            return entry.name
    raise SipvisError(f"The weights registry {REGISTRY_FILE} marks no entry as default; pass --weights")


# ----------------------------------------------------------------------------- resolution


def resolve_weights(spec: str, download: bool = True, progress: DownloadProgress | None = None) -> ResolvedWeights:
    """Turn a `--weights` value (registry name, http(s) URL or local path) into a file on disk.

    Registry names and URLs are served from the cache, downloaded on first use unless
    `download=False`. Cached files are checked against their sha256 (registry or recorded).
    Every failure is a one-line `SipvisError` saying what to do. `progress` is told how a download
    goes (see `DownloadProgress`; None: silently).
    """
    return _resolve(spec, allow_download=download, force=False, progress=progress)


def download_weights(spec: str, force: bool = False, progress: DownloadProgress | None = None) -> ResolvedWeights:
    """Make sure a registry name or URL is in the cache (downloading it again if `force`)."""
    if not (find_entry(spec) or _is_url(spec)):
        raise SipvisError(f"'{spec}' is neither a registry name ({_known_names()}) nor an http(s) URL")
    return _resolve(spec, allow_download=True, force=force, progress=progress)


def _resolve(spec: str, allow_download: bool, force: bool, progress: DownloadProgress | None) -> ResolvedWeights:
    entry = find_entry(spec)
    if entry is None and _is_url(spec):
        file_id = gdrive_file_id(spec)
        # A Drive link to a registry checkpoint is that checkpoint (same cache file, same checks).
        entry = next((e for e in registry() if file_id and e.gdrive_id == file_id), None)
        if entry is None:
            dest = weights_dir() / f"url-{hashlib.sha256(spec.encode()).hexdigest()[:12]}" / _url_filename(spec)
            path = _cached_or_download(spec, spec, dest, None, allow_download, force, progress)
            return ResolvedWeights(path, guess_format(path), None, recorded_sha256(path) or "")
    if entry is not None:
        if entry.is_local:
            return ResolvedWeights(_bundled_path(entry), entry.format, entry.name)
        path = _cached_or_download(f"'{entry.name}'", entry, entry.local_path(), entry.sha256 or None,
                                   allow_download, force, progress)
        return ResolvedWeights(path, entry.format, entry.name, recorded_sha256(path) or "")

    path = Path(spec).expanduser()
    if path.exists():
        return ResolvedWeights(path, guess_format(path), None)
    if os.sep not in spec and "/" not in spec and not path.suffix:
        raise SipvisError(f"Unknown weights '{spec}': not a registry name ({_known_names()}) and no such file")
    raise SipvisError(f"Weights file not found: {path}")


def _cached_or_download(label: str, source: str | Entry, dest: Path, sha256: str | None,
                        allow_download: bool, force: bool, progress: DownloadProgress | None) -> Path:
    url = source.source_url if isinstance(source, Entry) else source
    how = (f"Download {url} on a machine with internet and put it at {dest}, "
           "or pass --weights /path/to/file")
    if dest.exists() and not force:
        verify_file(dest, sha256)
        return dest
    if not allow_download:
        raise SipvisError(f"Weights {label} are not in the cache ({dest}) and downloading is disabled. {how}")
    try:
        return download(source, dest, sha256=sha256, progress=progress, force=force)
    except DownloadError as exc:
        raise SipvisError(f"Weights {label} are not in the cache ({dest}) and could not be downloaded "
                          f"({exc.reason}). {how}") from None


def _bundled_path(entry: Entry) -> Path:
    path = entry.local_path()
    if not path.exists():
        raise SipvisError(f"The '{entry.name}' weights are not built yet (expected {path}); they are produced by "
                          f"training the demo model. Use --weights {_first_remote_name()} or a local file meanwhile")
    return path


def _first_remote_name() -> str:
    try:
        return default_weights_name()
    except SipvisError:
        return "/path/to/file"


def _known_names() -> str:
    return "known: " + ", ".join(e.name for e in registry())


def _is_url(spec: str) -> bool:
    return spec.lower().startswith(("http://", "https://"))


def gdrive_file_id(url: str) -> str | None:
    """The file id of a Google Drive link (`/file/d/ID/...`, `uc?id=ID`, `open?id=ID`), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("drive.google.com", "docs.google.com", "drive.usercontent.google.com"):
        return None
    match = re.search(r"/file/d/([A-Za-z0-9_-]+)", parts.path)
    if match:
        return match.group(1)
    ids = urllib.parse.parse_qs(parts.query).get("id")
    return ids[0] if ids else None


def _url_filename(url: str) -> str:
    file_id = gdrive_file_id(url)
    if file_id:
        return f"gdrive-{file_id}"
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "weights"


def guess_format(path: Path) -> str:
    """"sipvis" (directory, .safetensors/.json pair), "mmdet-v1" (a torch pickle) or "unknown"."""
    if path.is_dir():
        return "sipvis"
    suffix = path.suffix.lower()
    if suffix == ".safetensors" or (suffix == ".json" and path.with_suffix(".safetensors").exists()):
        return "sipvis"
    if suffix in (".pth", ".pt"):
        return "mmdet-v1"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return "unknown"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch zip archive / legacy pickle
        return "mmdet-v1"
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON header
        return "sipvis"
    return "unknown"


# ----------------------------------------------------------------------------- checksums


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sidecar_path(path: Path) -> Path:
    """`<file>.sha256`, where the checksum of a file with no registry sha256 is recorded."""
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded beside `path` (sha256sum format: `<hex>  <name>`), or None."""
    try:
        text = sidecar_path(path).read_text(encoding="utf-8").split()
    except OSError:
        return None
    return text[0].lower() if text and _SHA256_RE.match(text[0].lower()) else None


def _record_sha256(path: Path, digest: str) -> None:
    sidecar_path(path).write_text(f"{digest}  {path.name}\n", encoding="utf-8")


def verify_file(path: Path, sha256: str | None = None) -> str:
    """Check `path` against `sha256` (else its recorded sha256; a file with neither gets one recorded).

    Returns the file's sha256; a mismatch raises `ChecksumError` naming expected and actual values.
    """
    expected = sha256.lower() if sha256 else recorded_sha256(path)
    if path.is_dir():
        return ""  # a checkpoint directory has no single checksum
    got = sha256_file(path)
    if expected and got != expected:
        raise ChecksumError(f"{path} does not match its sha256 (expected {expected}, got {got}): the file is "
                            f"damaged or was replaced; delete it and download it again (`sipvis weights download --force`)")
    if recorded_sha256(path) != got:
        _record_sha256(path, got)
    return got


# ----------------------------------------------------------------------------- download


def download(url_or_entry: str | Entry, dest: Path | str, sha256: str | None = None,
             progress: DownloadProgress | None = None,
             force: bool = False) -> Path:
    """Download a URL (or a registry entry) to `dest`, resuming a previous `dest.part` with HTTP Range.

    `dest` is the file to write (or an existing directory to write into). If `dest` already exists it
    is only verified, unless `force`. With `sha256` (or the entry's), a mismatch keeps the bytes as
    `dest.bad` and raises `ChecksumError`; without it, the sha256 is recorded in `dest.sha256`.
    Network failures raise `DownloadError` (one line); the `.part` file is kept for the next try.
    `progress` is told how the transfer goes (see `DownloadProgress`; None: silently).
    """
    if isinstance(url_or_entry, Entry):
        entry = url_or_entry
        if entry.is_local:
            return _bundled_path(entry)
        url, file_id, label = entry.url, entry.gdrive_id, entry.name
        sha256 = sha256 or entry.sha256 or None
        default_name = entry.file
    else:
        url, file_id = url_or_entry, gdrive_file_id(url_or_entry)
        label = default_name = _url_filename(url)
        if not _is_url(url):
            raise SipvisError(f"Not an http(s) URL: {url}")
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / default_name
    expected = sha256.lower() if sha256 else None
    if dest.exists() and not force:
        verify_file(dest, expected)
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if force:
        part.unlink(missing_ok=True)
    shown_url = url or GDRIVE_URL + f"?id={file_id}"
    _fetch_to_part(shown_url, file_id, part, progress, label)

    got = sha256_file(part)
    if expected and got != expected:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise ChecksumError(f"Checksum mismatch for {shown_url}: expected sha256 {expected}, got {got}; "
                            f"the downloaded bytes were kept as {bad}")
    os.replace(part, dest)
    _record_sha256(dest, got)
    return dest


def _fetch_to_part(url: str, file_id: str | None, part: Path, progress: DownloadProgress | None, label: str) -> None:
    """Fill `part` with the whole remote file, resuming and retrying transfers cut midway."""
    # One cookie jar per download: the Drive confirmation may ride on a cookie.
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    attempt = 0
    while True:
        attempt += 1
        start = part.stat().st_size if part.exists() else 0
        try:
            response = _open_file(opener, url, file_id, start)
        except _RangeNotSatisfiable as exc:
            if exc.total == start:  # the previous run got every byte but stopped before renaming
                return
            part.unlink()  # the partial file is longer than the remote file: start again
            if attempt >= MAX_ATTEMPTS:
                raise DownloadError(url, "the server rejects resuming (HTTP 416)") from None
            continue
        with response:
            total, received, cause = _receive(response, part, start, progress, label)
        size = part.stat().st_size
        if cause is None:
            if total is None or size >= total:
                return
            cause = f"the connection closed after {size} of {total} bytes"
        if attempt >= MAX_ATTEMPTS or received == 0:
            raise DownloadError(url, f"the transfer was interrupted ({cause}); {size} bytes are kept in "
                                     f"{part} and the next try resumes from there")
        time.sleep(RETRY_DELAY_S * attempt)


def _receive(response: http.client.HTTPResponse, part: Path, start: int, progress: DownloadProgress | None,
             label: str) -> tuple[int | None, int, str | None]:
    """Append (or, when the server ignored Range, write) the response body to `part`.
    Returns (total size or None, bytes received, why it stopped early or None)."""
    offset, total = _content_range(response, start)
    mode = "ab" if offset else "wb"  # offset 0: the server ignored Range, rewrite from scratch
    done = offset
    if progress is not None:
        progress(label, done, total)
    received = 0
    try:
        with open(part, mode) as f:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                received += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(label, done, total)
    except (OSError, http.client.HTTPException) as exc:
        return total, received, _describe(exc)
    return total, received, None


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None):
        self.total = total


def _content_range(response: http.client.HTTPResponse, start: int) -> tuple[int, int | None]:
    """(first byte offset of this response's body, total file size or None)."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            raise DownloadError(response.geturl(), "the server answered the resume request with the wrong byte range")
        return start, int(match.group(3)) if match.group(3) != "*" else None
    return 0, int(length) if length and length.isdigit() else None


def _request(opener: urllib.request.OpenerDirector, url: str, start: int) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": f"sipvis/{__version__}"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        return opener.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            match = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
            raise _RangeNotSatisfiable(int(match.group(1)) if match else None) from None
        raise DownloadError(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        host = urllib.parse.urlsplit(url).netloc
        raise DownloadError(url, f"cannot reach {host}: {_describe(exc.reason)}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(url, _describe(exc)) from None


def _describe(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    if isinstance(exc, TimeoutError):
        return f"timed out after {TIMEOUT_S:g} s"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed early"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _is_html(response: http.client.HTTPResponse) -> bool:
    return response.headers.get_content_type() == "text/html"


def _open_file(opener: urllib.request.OpenerDirector, url: str, file_id: str | None,
               start: int) -> http.client.HTTPResponse:
    """Open the response whose body is the file (from byte `start`), going through Drive's confirm page."""
    if not file_id:
        return _request(opener, url, start)
    base = os.environ.get("SIPVIS_GDRIVE_URL") or GDRIVE_URL
    first_url = f"{base}?{urllib.parse.urlencode({'export': 'download', 'id': file_id})}"
    response = _request(opener, first_url, start)
    if not _is_html(response):
        return response  # small files come directly
    with response:
        page = response.read(_MAX_PAGE).decode("utf-8", "replace")
        page_url = response.geturl()
    confirm_url = _drive_confirm_url(page, page_url, file_id, opener)
    if confirm_url is None:
        raise DownloadError(first_url, f"Google Drive did not offer the file ({_page_title(page)}); it may be over "
                                       "its download quota: try later, or download it in a browser")
    response = _request(opener, confirm_url, start)
    if _is_html(response):
        with response:
            page = response.read(_MAX_PAGE).decode("utf-8", "replace")
        raise DownloadError(confirm_url, f"Google Drive answered with a web page instead of the file "
                                         f"({_page_title(page)}); try later, or download it in a browser")
    return response


class _DrivePage(html.parser.HTMLParser):
    """Collects the forms (action + named inputs), links and title of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self.title = ""
        self._in_form = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((attr.get("action", ""), {}))
            self._in_form = True
        elif tag == "input" and self._in_form and attr.get("name"):
            self.forms[-1][1][attr["name"]] = attr.get("value", "")
        elif tag == "a" and attr.get("href"):
            self.links.append(attr["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _page_title(page: str) -> str:
    parser = _DrivePage()
    parser.feed(page)
    return f"page title: {parser.title.strip()!r}" if parser.title.strip() else "an HTML page"


def _drive_confirm_url(page: str, page_url: str, file_id: str, opener: urllib.request.OpenerDirector) -> str | None:
    """The URL that downloads the file after Drive's "can't scan for viruses" page, or None.

    Current Drive: a GET form (action drive.usercontent.google.com/download) with hidden inputs
    id, export, confirm, uuid. Older Drive: a link carrying `confirm=TOKEN`, or the token in a
    `download_warning*` cookie.
    """
    parser = _DrivePage()
    parser.feed(page)
    for action, inputs in parser.forms:
        if "confirm" in inputs or "download" in action:
            params = {"id": file_id, "export": "download", **inputs}
            target = urllib.parse.urljoin(page_url, action) if action else _usercontent_url()
            return f"{target}?{urllib.parse.urlencode(params)}"
    for href in parser.links:
        if "confirm=" in href:
            return urllib.parse.urljoin(page_url, href)
    token = None
    match = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    if match:
        token = match.group(1)
    else:
        for handler in opener.handlers:
            if isinstance(handler, urllib.request.HTTPCookieProcessor):
                token = next((c.value for c in handler.cookiejar if c.name.startswith("download_warning")), None)
    if token:
        params = {"id": file_id, "export": "download", "confirm": token}
        return f"{_usercontent_url()}?{urllib.parse.urlencode(params)}"
    return None


def _usercontent_url() -> str:
    return os.environ.get("SIPVIS_GDRIVE_USERCONTENT_URL") or GDRIVE_USERCONTENT_URL


__all__ = [
    "ChecksumError", "DownloadError", "Entry", "ResolvedWeights", "cache_dir", "default_weights_name",
    "download", "download_weights", "find_entry", "gdrive_file_id", "guess_format", "recorded_sha256",
    "registry", "resolve_weights", "sha256_file", "sidecar_path", "verify_file", "weights_dir",
]
