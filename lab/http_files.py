"""A file server for tests of model downloads: HTTP Range requests (resumed downloads), transfers that
break off on purpose, and a log of what was asked.

    server = FileServer(directory, "10.151.0.1")      # serves on a free port, from a thread
    server.cut_once("m-00002-of-00003.gguf", 4096)     # its next GET ends after 4096 bytes
    server.requests                                    # [("GET", "/m-00002-of-00003.gguf", "bytes=4096-"), ...]
    server.close()

With `tls` (an ssl.SSLContext, e.g. from lab/tls.py's TestCA) it serves https:// instead.
"""

from __future__ import annotations

import http.server
import re
import socket
import ssl
import threading
import time
from pathlib import Path


class FileServer:
    def __init__(self, directory: str | Path, address: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.directory = Path(directory)
        self.requests: list[tuple[str, str, str | None]] = []
        self.cuts: dict[str, int] = {}
        self.rate: int | None = None  # bytes per second, for tests of progress lines
        self.token: str | None = None  # when set, every request needs "Authorization: Bearer <token>"
        owner = self

        class Handler(RangeHandler):
            server_of = owner

        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        if tls is not None:  # the handshake runs in the handler's thread (first read), not in accept()
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
            self.httpd.handle_error = lambda request, client: None  # a client that refuses our CA: expected
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{address}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def cut_once(self, name: str, after: int) -> None:
        self.cuts[name] = after

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    server_of: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _file(self) -> Path | None:
        name = self.path.split("?", 1)[0].lstrip("/")
        root = self.server_of.directory.resolve()
        path = (root / name).resolve()
        return path if name and path.is_relative_to(root) and path.is_file() else None

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        self.server_of.requests.append((self.command, self.path, self.headers.get("Range")))
        token = self.server_of.token
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            self.send_error(401)
            return
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        start = 0
        match = re.fullmatch(r"bytes=([0-9]+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        cut = self.server_of.cuts.pop(path.name, None) if body else None
        with open(path, "rb") as f:
            f.seek(start)
            remaining = size - start if cut is None else max(cut - start, 0)
            while remaining > 0:
                chunk = f.read(min(16384, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
                if self.server_of.rate:
                    time.sleep(len(chunk) / self.server_of.rate)
        if cut is not None:  # break the transfer off: the client sees a short body
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
