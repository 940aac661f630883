"""Serve the OHIF viewer and Orthanc's DICOMweb API from one origin (no CORS, no internet).

OHIF is a single-page application: every path that is not a file of its ``dist/`` must return
``index.html`` (``/viewer?StudyInstanceUIDs=…`` is a client-side route). Orthanc 1.10.1's
ServeFolders plugin serves files only (no such fallback) and cannot share ``/`` with Orthanc's
REST API, so this small server does both jobs:

* ``/dicom-web/…`` and ``/wado…`` are forwarded to Orthanc (method, query, body and the
  ``Accept``/``Content-Type`` headers), the answer is relayed as it came;
* ``/app-config.js`` is the file given with ``--config`` (default: ``app-config.js`` beside
  this script), which points OHIF's DICOMweb data source at those same-origin paths;
* everything else is a file of the OHIF ``dist/`` folder, or ``index.html``.

Usage::

    python viewer/serve.py --orthanc http://127.0.0.1:8042 --port 3000
    # then open http://127.0.0.1:3000/viewer?StudyInstanceUIDs=<study uid>

It is a test and demonstration tool (loopback, no TLS, no authentication). In a deployment
put a real web server (nginx, Caddy) in front with the same three rules.
"""

from __future__ import annotations

import argparse
import http.client
import mimetypes
import shutil
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DIST = HERE / "node_modules" / "@ohif" / "app" / "dist"
DEFAULT_CONFIG = HERE / "app-config.js"
PROXIED_PREFIXES = ("/dicom-web/", "/dicom-web?", "/wado")
#: Request headers passed on to Orthanc (hop-by-hop and browser-only headers are dropped).
FORWARDED_REQUEST_HEADERS = ("accept", "content-type", "range", "if-none-match", "if-modified-since")
#: Response headers not relayed (the body is relayed de-chunked with its own Content-Length).
DROPPED_RESPONSE_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "server"}
EXTRA_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".woff2": "font/woff2"}


def make_handler(dist: Path, config: Path, orthanc: str) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class for one OHIF ``dist`` folder and one Orthanc base URL."""
    upstream = urllib.parse.urlsplit(orthanc)
    if upstream.scheme != "http" or not upstream.hostname:
        raise ValueError(f"--orthanc must be an http://host:port URL, got {orthanc!r}")
    dist = dist.resolve()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cdss-viewer"

        def log_message(self, format: str, *args: object) -> None:
            if self.server.verbose:  # type: ignore[attr-defined]
                super().log_message(format, *args)

        # --- proxy -------------------------------------------------------------------------------
        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port or 80, timeout=120)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in DROPPED_RESPONSE_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except OSError as exc:
                self.send_error(502, f"Orthanc at {orthanc} did not answer: {exc}")
            finally:
                conn.close()

        # --- static ------------------------------------------------------------------------------
        def _static(self) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if path == "/app-config.js":
                target = config
            else:
                target = (dist / path.lstrip("/")).resolve()
                if not target.is_relative_to(dist) or not target.is_file():
                    target = dist / "index.html"  # single-page application route
            ctype = EXTRA_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
            size = target.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", ctype or "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if self.command != "HEAD":
                with target.open("rb") as fh:
                    shutil.copyfileobj(fh, self.wfile)

        def _dispatch(self) -> None:
            if self.path.startswith(PROXIED_PREFIXES):
                self._proxy()
            elif self.command in ("GET", "HEAD"):
                self._static()
            else:
                self.send_error(405, "only GET/HEAD outside /dicom-web and /wado")

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    return Handler


def make_server(
    dist: Path, config: Path, orthanc: str, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
) -> ThreadingHTTPServer:
    """Create (not start) the server; ``port=0`` picks a free port (see ``server.server_port``)."""
    if not (dist / "index.html").is_file():
        raise FileNotFoundError(
            f"no OHIF build at {dist}: run `npm ci` in viewer/ (fetches @ohif/app's dist)"
        )
    if not config.is_file():
        raise FileNotFoundError(f"OHIF configuration {config} does not exist")
    server = ThreadingHTTPServer((host, port), make_handler(dist, config, orthanc))
    server.daemon_threads = True
    server.verbose = verbose  # type: ignore[attr-defined]
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orthanc", default="http://127.0.0.1:8042", help="Orthanc base URL (http)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--dist", type=Path, default=DEFAULT_DIST, help="OHIF dist/ folder")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="OHIF app-config.js")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.dist, args.config, args.orthanc, args.host, args.port, args.verbose)
    except (FileNotFoundError, ValueError) as exc:
        print(f"serve.py: {exc}", file=sys.stderr)
        return 2
    print(f"OHIF on http://{args.host}:{server.server_port}/ (DICOMweb from {args.orthanc})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
