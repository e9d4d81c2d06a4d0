"""Weights registry, cache and downloader, against a local HTTP server (never the internet).

The server (http.server in a thread) serves:
  /files/<name>           the file, with Range support (206 + Content-Range, 416 past the end)
  /drop-once/<name>       the first request is cut after half of its body, later ones are whole
  /drop/<name>            every request is cut after half of its body
  /slow                   answers after 1 s
  /uc?export=download&id= a Google-Drive-like "can't scan for viruses" HTML page with a GET form
  /usercontent/download   the file, only with the form's confirm + uuid (Range supported)
  anything else           404
Every request's path and Range header is logged so tests can check how the client resumed.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import QuietHTTPServer

from sipvis import SipvisError
from sipvis import weights
from sipvis.cli import cli

DATA = random.Random(0).randbytes(300_000)
DATA_SHA = hashlib.sha256(DATA).hexdigest()
OFFICIAL_ID = "1HIQyzApw6b7CUdTxchZT_TIcGYcDodbn"
MS_ID = "1BWU8_eaDkGcJ5YEXRzs5oDg6E3adgXWt"
DRIVE_FILES = {OFFICIAL_ID: DATA, MS_ID: DATA[::-1]}

CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="/usercontent/download" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1234">
</form></body></html>"""

LINK_PAGE = """<html><head><title>Google Drive - Virus scan warning</title></head><body>
<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC_9&amp;id={id}">Download anyway</a>
</body></html>"""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.log.append((url.path, query, self.headers.get("Range")))
        parts = url.path.strip("/").split("/")
        if parts[0] == "files" and len(parts) == 2:
            return self._send_file(DATA)
        if parts[0] == "drop-once" and len(parts) == 2:
            key = url.path
            first = key not in self.server.dropped
            self.server.dropped.add(key)
            return self._send_file(DATA, cut=first)
        if parts[0] == "drop" and len(parts) == 2:
            return self._send_file(DATA, cut=True)
        if url.path == "/slow":
            time.sleep(1.0)  # longer than the client's (patched) timeout
            return self._send_file(DATA)
        if url.path == "/uc" and query.get("id") in DRIVE_FILES:
            if "confirm" in query:  # the old flow's link comes back here with the token
                return self._send_file(DRIVE_FILES[query["id"]]) if query["confirm"] == "AbC_9" else self._html("bad")
            page = LINK_PAGE if self.server.drive_style == "link" else CONFIRM_PAGE
            return self._html(page.format(id=query["id"]))
        if url.path == "/usercontent/download" and query.get("id") in DRIVE_FILES:
            if query.get("confirm") == "t" and query.get("uuid") == "u-1234" and query.get("export") == "download":
                return self._send_file(DRIVE_FILES[query["id"]])
            return self._html("<html><head><title>Missing confirmation</title></head></html>")
        self.send_error(404, "Not Found")

    def _html(self, page: str) -> None:
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, data: bytes, cut: bool = False) -> None:
        start = 0
        header = self.headers.get("Range")
        if header:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A cut transfer announces the whole length but sends half, then closes the connection.
        self.wfile.write(body[: len(body) // 2] if cut else body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def server():
    httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
    httpd.log, httpd.dropped, httpd.drive_style = [], set(), "form"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server, monkeypatch, tmp_path) -> str:
    """Base URL of the server; the cache is tmp_path, Drive points at the server, retries don't sleep."""
    server.log.clear()
    server.dropped.clear()
    server.drive_style = "form"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIPVIS_GDRIVE_URL", f"{url}/uc")
    monkeypatch.setenv("SIPVIS_GDRIVE_USERCONTENT_URL", f"{url}/usercontent/download")
    monkeypatch.setattr(weights, "RETRY_DELAY_S", 0.0)
    return url


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- download()


def test_download_with_correct_sha256(base, tmp_path):
    dest = tmp_path / "w.pth"
    path = weights.download(f"{base}/files/w.pth", dest, sha256=DATA_SHA, progress=None)
    assert path == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_name("w.pth.part").exists()
    assert weights.recorded_sha256(dest) == DATA_SHA


def test_download_with_wrong_sha256_names_both_and_keeps_bad_copy(base, tmp_path):
    dest = tmp_path / "w.pth"
    wrong = "0" * 64
    with pytest.raises(weights.ChecksumError) as info:
        weights.download(f"{base}/files/w.pth", dest, sha256=wrong, progress=None)
    message = str(info.value)
    assert f"expected sha256 {wrong}" in message and f"got {DATA_SHA}" in message
    assert not dest.exists()
    assert not dest.with_name("w.pth.part").exists()
    assert dest.with_name("w.pth.bad").read_bytes() == DATA


def test_download_without_sha256_records_it_and_verifies_later_uses(base, tmp_path):
    dest = tmp_path / "w.pth"
    weights.download(f"{base}/files/w.pth", dest, progress=None)
    sidecar = dest.with_name("w.pth.sha256")
    assert sidecar.read_text() == f"{DATA_SHA}  w.pth\n"
    dest.write_bytes(DATA[:-1] + b"\x00")  # the cached file gets damaged
    with pytest.raises(weights.ChecksumError, match=f"expected {DATA_SHA}"):
        weights.download(f"{base}/files/w.pth", dest, progress=None)


def test_interrupted_transfer_resumes_with_range(base, server, tmp_path):
    dest = tmp_path / "w.pth"
    weights.download(f"{base}/drop-once/w.pth", dest, progress=None)
    assert dest.read_bytes() == DATA
    ranges = [rng for path, _, rng in server.log if path == "/drop-once/w.pth"]
    assert ranges == [None, f"bytes={len(DATA) // 2}-"]


def test_partial_file_from_an_earlier_run_is_resumed(base, server, tmp_path):
    dest = tmp_path / "w.pth"
    dest.with_name("w.pth.part").write_bytes(DATA[:12345])
    weights.download(f"{base}/files/w.pth", dest, sha256=DATA_SHA, progress=None)
    assert dest.read_bytes() == DATA
    assert [rng for _, _, rng in server.log] == ["bytes=12345-"]


def test_transfer_cut_every_time_keeps_part_and_next_run_finishes(base, server, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "MAX_ATTEMPTS", 2)
    dest = tmp_path / "w.pth"
    part = dest.with_name("w.pth.part")
    with pytest.raises(weights.DownloadError, match="interrupted") as info:
        weights.download(f"{base}/drop/w.pth", dest, progress=None)
    kept = len(DATA) // 2 + (len(DATA) - len(DATA) // 2) // 2  # half, then half of the rest
    assert part.stat().st_size == kept
    assert str(part) in str(info.value)
    weights.download(f"{base}/files/w.pth", dest, sha256=DATA_SHA, progress=None)
    assert dest.read_bytes() == DATA
    assert server.log[-1][2] == f"bytes={kept}-"


def test_complete_part_left_before_rename_is_accepted(base, server, tmp_path):
    dest = tmp_path / "w.pth"
    dest.with_name("w.pth.part").write_bytes(DATA)  # every byte arrived, the process died before the rename
    weights.download(f"{base}/files/w.pth", dest, sha256=DATA_SHA, progress=None)
    assert dest.read_bytes() == DATA
    assert [rng for _, _, rng in server.log] == [f"bytes={len(DATA)}-"]


def test_404_is_one_clear_line(base, tmp_path):
    dest = tmp_path / "w.pth"
    with pytest.raises(weights.DownloadError) as info:
        weights.download(f"{base}/missing.pth", dest, progress=None)
    assert str(info.value) == f"Could not download {base}/missing.pth: HTTP 404 Not Found"
    assert not dest.exists() and not dest.with_name("w.pth.part").exists()


def test_timeout_is_one_clear_line(base, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "TIMEOUT_S", 0.2)
    with pytest.raises(weights.DownloadError) as info:
        weights.download(f"{base}/slow", tmp_path / "w.pth", progress=None)
    assert str(info.value) == f"Could not download {base}/slow: timed out after 0.2 s"


def test_google_drive_confirm_form(base, server, tmp_path):
    dest = tmp_path / "d.pth"
    weights.download(f"https://drive.google.com/file/d/{OFFICIAL_ID}/view?usp=sharing", dest, progress=None)
    assert dest.read_bytes() == DATA
    paths = [(path, query) for path, query, _ in server.log]
    assert paths[0] == ("/uc", {"export": "download", "id": OFFICIAL_ID})
    assert paths[1] == ("/usercontent/download",
                        {"id": OFFICIAL_ID, "export": "download", "confirm": "t", "uuid": "u-1234"})


def test_google_drive_old_style_confirm_link(base, server, tmp_path):
    server.drive_style = "link"
    dest = tmp_path / "d.pth"
    weights.download(f"https://drive.google.com/uc?id={MS_ID}&export=download", dest, progress=None)
    assert dest.read_bytes() == DRIVE_FILES[MS_ID]
    assert server.log[1][1] == {"export": "download", "confirm": "AbC_9", "id": MS_ID}


def test_google_drive_resume_goes_through_confirm_page(base, server, tmp_path):
    dest = tmp_path / "d.pth"
    dest.with_name("d.pth.part").write_bytes(DATA[:1000])
    weights.download(f"https://drive.google.com/file/d/{OFFICIAL_ID}/view", dest, progress=None)
    assert dest.read_bytes() == DATA
    assert server.log[-1][0] == "/usercontent/download" and server.log[-1][2] == "bytes=1000-"


# ----------------------------------------------------------------------------- registry and resolve_weights()


def test_shipped_registry():
    entries = {e.name: e for e in weights.registry()}
    assert weights.default_weights_name() == "sipmask-r50-ytvis"
    assert entries["sipmask-r50-ytvis"].gdrive_id == OFFICIAL_ID
    assert entries["sipmask-r50-ytvis-ms"].gdrive_id == MS_ID
    assert {entries[n].format for n in ("sipmask-r50-ytvis", "sipmask-r50-ytvis-ms")} == {"mmdet-v1"}
    assert entries["demo"].format == "sipvis" and entries["demo"].is_local
    assert entries["demo"].local_path() == weights.REGISTRY_FILE.parent / "demo.safetensors"


def test_cache_dir_follows_sipvis_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path))
    assert weights.cache_dir() == tmp_path
    assert weights.weights_dir() == tmp_path / "weights"
    monkeypatch.delenv("SIPVIS_HOME")
    import platformdirs

    assert weights.cache_dir() == Path(platformdirs.user_cache_dir("sipvis"))


def test_resolve_registry_name_downloads_into_cache_then_reuses_it(base, server, tmp_path):
    resolved = weights.resolve_weights("sipmask-r50-ytvis", progress=None)
    expected = tmp_path / "home" / "weights" / "sipmask_vis_r50_1x.pth"
    assert resolved == weights.ResolvedWeights(expected, "mmdet-v1", "sipmask-r50-ytvis", DATA_SHA)
    assert expected.read_bytes() == DATA
    assert weights.recorded_sha256(expected) == DATA_SHA  # official sha256 unknown: recorded on first download
    n_requests = len(server.log)
    assert weights.resolve_weights("sipmask-r50-ytvis", download=False).path == expected
    assert len(server.log) == n_requests  # served from the cache
    expected.write_bytes(b"not the checkpoint")
    with pytest.raises(SipvisError, match="does not match its sha256"):
        weights.resolve_weights("sipmask-r50-ytvis")


def test_export_cache_key_of_a_cached_file_hashes_it_once(base, server, monkeypatch):
    """`--runtime` keys its export by the checkpoint's sha256: the checksum resolving just verified, not a
    second pass over a file of hundreds of MB."""
    from sipvis.runtime.choose import source_sha256

    weights.resolve_weights("sipmask-r50-ytvis", progress=None)  # downloaded and recorded
    hashed = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert source_sha256("sipmask-r50-ytvis") == hashlib.sha256(DATA_SHA.encode()).hexdigest()
    assert len(hashed) == 1  # the cache check


def test_resolve_drive_link_of_a_registry_entry_uses_its_cache_file(base, tmp_path):
    resolved = weights.resolve_weights(f"https://drive.google.com/file/d/{MS_ID}/view", progress=None)
    assert resolved.name == "sipmask-r50-ytvis-ms"
    assert resolved.path == tmp_path / "home" / "weights" / "sipmask_vis_r50_ms_1x.pth"


def test_resolve_url_caches_by_url_hash_and_file_name(base, tmp_path):
    url = f"{base}/files/model.safetensors"
    resolved = weights.resolve_weights(url, progress=None)
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    assert resolved == weights.ResolvedWeights(tmp_path / "home" / "weights" / f"url-{key}" / "model.safetensors",
                                               "sipvis", None, DATA_SHA)
    assert resolved.path.read_bytes() == DATA


def test_resolve_local_path_and_missing_path(tmp_path):
    file = tmp_path / "mine.pth"
    file.write_bytes(b"\x80\x02")
    assert weights.resolve_weights(str(file)) == weights.ResolvedWeights(file, "mmdet-v1", None)
    with pytest.raises(SipvisError, match=r"^Weights file not found: .*nothere\.pth$"):
        weights.resolve_weights(str(tmp_path / "nothere.pth"))
    with pytest.raises(SipvisError, match="Unknown weights 'sipmask-r101'.*known: sipmask-r50-ytvis"):
        weights.resolve_weights("sipmask-r101")


def test_offline_error_for_uncached_name_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path))
    monkeypatch.setenv("SIPVIS_GDRIVE_URL", f"http://127.0.0.1:{closed_port()}/uc")
    dest = tmp_path / "weights" / "sipmask_vis_r50_1x.pth"
    with pytest.raises(SipvisError) as info:
        weights.resolve_weights("sipmask-r50-ytvis", progress=None)
    message = str(info.value)
    assert message.startswith(f"Weights 'sipmask-r50-ytvis' are not in the cache ({dest}) and could not be "
                              "downloaded (cannot reach 127.0.0.1:")
    assert message.endswith(f"Download https://drive.google.com/file/d/{OFFICIAL_ID}/view on a machine with "
                            f"internet and put it at {dest}, or pass --weights /path/to/file")
    assert "\n" not in message
    with pytest.raises(SipvisError, match="downloading is disabled"):
        weights.resolve_weights("sipmask-r50-ytvis", download=False)


def write_registry(tmp_path: Path, monkeypatch) -> Path:
    """A registry with one remote entry (on the test server) and one bundled entry not built yet."""
    folder = tmp_path / "reg"
    folder.mkdir()
    registry = folder / "registry.toml"
    registry.write_text(f'''
[[weights]]
name = "tiny"
description = "Tiny test checkpoint"
format = "mmdet-v1"
file = "tiny.pth"
url = "{{base}}/files/tiny.pth"
sha256 = "{DATA_SHA}"
size = {len(DATA)}
default = true

[[weights]]
name = "demo"
description = "Bundled demo"
format = "sipvis"
file = "demo.safetensors"
path = "demo.safetensors"
''')
    monkeypatch.setattr(weights, "REGISTRY_FILE", registry)
    return registry


def test_bundled_entry_not_built_yet(tmp_path, monkeypatch):
    registry = write_registry(tmp_path, monkeypatch)
    with pytest.raises(SipvisError, match=r"The 'demo' weights are not built yet \(expected .*reg/demo\.safetensors\)"):
        weights.resolve_weights("demo")
    (registry.parent / "demo.safetensors").write_bytes(b"x")
    assert weights.resolve_weights("demo") == weights.ResolvedWeights(
        registry.parent / "demo.safetensors", "sipvis", "demo")


def test_malformed_registry_is_one_line(tmp_path, monkeypatch):
    registry = tmp_path / "registry.toml"
    registry.write_text('[[weights]]\nname = "x"\ndescription = "d"\nformat = "onnx"\nfile = "x.pth"\nurl = "u"\n')
    monkeypatch.setattr(weights, "REGISTRY_FILE", registry)
    with pytest.raises(SipvisError, match="format must be one of mmdet-v1, sipvis, not 'onnx'"):
        weights.registry()


# ----------------------------------------------------------------------------- CLI


def test_cli_list_shows_names_sizes_and_cache_state(base, tmp_path, monkeypatch):
    registry = write_registry(tmp_path, monkeypatch)
    registry.write_text(registry.read_text().replace("{base}", base))
    runner = CliRunner()
    result = runner.invoke(cli, ["weights", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Cache: {tmp_path / 'home' / 'weights'}  (set SIPVIS_HOME to move it)"
    tiny = next(line for line in lines if "tiny" in line)
    assert "tiny (default)" in tiny and "300.0 kB" in tiny and tiny.rstrip(" │").endswith("no")
    assert "not built yet" in next(line for line in lines if "demo" in line)

    result = runner.invoke(cli, ["weights", "download", "tiny", "--quiet"])
    assert result.exit_code == 0, result.output
    cached = tmp_path / "home" / "weights" / "tiny.pth"
    assert result.output == f"{cached}\n"
    result = runner.invoke(cli, ["weights", "list"], env={"COLUMNS": "400"})
    tiny = next(line for line in result.output.splitlines() if "tiny" in line)
    assert str(cached) in tiny


def test_cli_list_with_shipped_registry(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["weights", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("sipmask-r50-ytvis (default)", "sipmask-r50-ytvis-ms", "demo"):
        assert name in result.output


def test_cli_download_url_with_progress_then_cached(base, server, tmp_path):
    runner = CliRunner()
    url = f"{base}/files/w.pth"
    result = runner.invoke(cli, ["weights", "download", url])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.read_bytes() == DATA and path.parent.parent == tmp_path / "home" / "weights"
    assert f"sha256 {DATA_SHA}" in result.stderr
    n_requests = len(server.log)
    assert runner.invoke(cli, ["weights", "download", url, "-q"]).stdout == f"{path}\n"
    assert len(server.log) == n_requests
    assert runner.invoke(cli, ["weights", "download", url, "-q", "--force"]).exit_code == 0
    assert len(server.log) == n_requests + 1


def test_cli_download_registry_name_via_drive(base, tmp_path):
    result = CliRunner().invoke(cli, ["weights", "download", "sipmask-r50-ytvis-ms", "--quiet"])
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()).read_bytes() == DRIVE_FILES[MS_ID]


def test_cli_download_errors_are_one_line(base):
    runner = CliRunner()
    url = f"{base}/missing.pth"
    result = runner.invoke(cli, ["weights", "download", url, "-q"])
    assert result.exit_code == 1
    dest = weights.weights_dir() / f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}" / "missing.pth"
    assert result.output == (f"Error: Weights {url} are not in the cache ({dest}) and could not be downloaded "
                             f"(HTTP 404 Not Found). Download {url} on a machine with internet and put it at "
                             f"{dest}, or pass --weights /path/to/file\n")
    result = runner.invoke(cli, ["weights", "download", "./local.pth"])
    assert result.exit_code == 1
    assert "is neither a registry name" in result.output


def test_progress_callback_sees_every_byte_of_a_resumed_transfer(base, server, tmp_path):
    """The library draws nothing: it reports (label, bytes done, total) from where the transfer resumes."""
    dest = tmp_path / "w.pth"
    dest.with_name("w.pth.part").write_bytes(DATA[:12345])
    calls = []
    weights.download(f"{base}/files/w.pth", dest, sha256=DATA_SHA, progress=lambda *a: calls.append(a))
    assert calls[0] == ("w.pth", 12345, len(DATA)) and calls[-1] == ("w.pth", len(DATA), len(DATA))
    assert all(b[1] >= a[1] for a, b in zip(calls, calls[1:]))
