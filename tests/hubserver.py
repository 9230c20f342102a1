"""A small, real Hugging Face Hub protocol server for tests (stdlib only).

`HubServer` speaks enough of the Hub's HTTP protocol that the *real* ``huggingface_hub``
client code paths work against it: ``hf_hub_download``, ``snapshot_download``,
``HfApi().model_info`` / ``repo_info`` / ``list_repo_tree`` / ``list_repo_files`` /
``list_repo_refs`` / ``list_repo_commits`` / ``get_paths_info`` / ``file_exists``, and
uploads: ``HfApi().create_repo``, ``create_branch``, ``upload_file``, ``upload_folder`` and
``create_commit`` (including ``create_pr=True`` and deletions). It was written against
``huggingface_hub`` 2.4.0 by reading its source; nothing of it is mocked.

The server binds to 127.0.0.1 on a free port and runs a ``ThreadingHTTPServer`` in a daemon
thread. Every response carries ``Connection: close`` (no keep-alive), so a closed server is
seen by the client as a refused connection, never as a stale pooled socket.

Usage::

    with HubServer() as server, hub_env(server, tmp_path / "hub"):
        sha = server.add_repo("org/model", {"config.json": b"{}", "weights.bin": b"..."})
        from huggingface_hub import hf_hub_download
        path = hf_hub_download("org/model", "config.json")       # cache under tmp_path / "hub"

Environment (``hub_env``)
-------------------------
``huggingface_hub.constants`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET``,
``HF_HOME``, ``HF_HUB_CACHE``... **once, at import time**, and ``huggingface_hub.hf_api`` builds a
module-level ``api = HfApi()`` (behind ``huggingface_hub.model_info``, ``create_repo``,
``upload_folder``, ...) whose ``endpoint`` is frozen at import time too. Setting environment
variables after ``import huggingface_hub`` therefore does nothing. ``hub_env`` does both, robustly,
whatever was imported before:

* it imports ``huggingface_hub`` first (so the values it saves are the genuine ones), then sets the
  environment variables (``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``,
  ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HUB_DISABLE_UPDATE_CHECK=1``, ``HF_TOKEN``; unsets
  ``TRANSFORMERS_OFFLINE``, ``HUGGINGFACE_CO_STAGING``, ``HF_OIDC_RESOURCE``, ...) for subprocesses
  and code that reads the environment lazily;
* it patches the already-imported values: ``constants.ENDPOINT``,
  ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (what ``hf_hub_url``/``hf_hub_download`` format),
  ``constants.HF_URL_HOSTS`` (+ 127.0.0.1, so ``RepoUrl`` parses the server's URLs),
  ``constants.HF_HUB_OFFLINE`` (what ``is_offline_mode()`` returns; checked by the request hook of the
  shared httpx2 client), ``constants.HF_HUB_DISABLE_XET``, ``constants.HF_HUB_DISABLE_TELEMETRY``,
  ``constants.HF_HUB_DISABLE_IMPLICIT_TOKEN``, every path derived from ``HF_HOME`` (``HF_HOME``,
  ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_ASSETS_CACHE``, ``HUGGINGFACE_ASSETS_CACHE``,
  ``HF_TOKEN_PATH``, ``HF_STORED_TOKENS_PATH``, ``HF_XET_CACHE``, ``AGENT_HARNESSES_PATH``,
  ``CHECK_FOR_UPDATE_DONE_PATH``, ``CHECK_FOR_SKILL_UPDATE_DONE_PATH``), the by-value copies
  ``utils._cache_manager.HF_HUB_CACHE`` / ``utils._cache_assets.HF_ASSETS_CACHE`` and
  ``hf_api.api.endpoint``;
* it writes an empty AI-agent registry to ``$HF_HOME/.agent_harnesses.json``: otherwise the first
  request of the process makes ``build_hf_headers`` fetch ``{ENDPOINT}/api/agent-harnesses`` (the
  server answers it anyway) and write it under ``~/.cache``;
* by default it removes the sleeps of huggingface_hub's retry back-off (``utils._http.time`` is
  swapped for a shim whose ``sleep`` does nothing): after a 5xx or a refused connection with an
  empty cache, ``hf_hub_download`` retries 5 times with 1+2+4+8+8 s of sleep, 23 s per call;
* it closes huggingface_hub's shared httpx2 client on entry and exit and restores everything on exit.

Pass ``offline=True`` (or call ``env.set_offline(True)`` inside the block) for ``HF_HUB_OFFLINE=1``.

Repository model
----------------
A repo is a set of commits (full snapshots: path -> bytes) and branches/tags pointing at them.
``add_repo`` appends a commit to a branch (created if needed) and returns its 40-hex sha, a sha1 of
the repo id, parent sha, file digests and a per-server sequence number. Requests by branch, tag
or full commit sha are accepted (``refs/pr/N`` branches too). A file is presented as a Git LFS file
(ETag = sha256 of the content, ``X-Linked-Etag``/``X-Linked-Size``, ``lfs`` in the tree API and in
``siblings``) when its name ends with one of ``LFS_SUFFIXES`` (the binary types of the Hub's default
``.gitattributes``) or it is at least ``lfs_min_size`` bytes; otherwise it is a regular git file
(ETag = its git blob sha1), as on the Hub. Nothing advertises Xet (no ``X-Xet-*`` headers, no
``xetHash``), so downloads are plain HTTP GETs; the preupload endpoint answers ``uploadMode:
"regular"`` for every file, so uploads send the content base64 in the NDJSON commit body (no
LFS batch / Xet upload).

Errors (as the Hub sends them; the client maps them to its exception classes)
------------------------------------------------------------------------------
* unknown repo: 401 without an ``Authorization`` header, 404 with one; ``X-Error-Code: RepoNotFound``
  -> ``RepositoryNotFoundError``;
* unknown revision: 404 ``X-Error-Code: RevisionNotFound`` -> ``RevisionNotFoundError``;
* missing file: 404 ``X-Error-Code: EntryNotFound`` (+ ``X-Repo-Commit``) -> ``RemoteEntryNotFoundError``
  (a subclass of ``EntryNotFoundError`` and ``HfHubHTTPError``);
* ``server.fail_all = True``: every request answers ``server.fail_status`` (503) -> ``HfHubHTTPError``
  from API calls; ``hf_hub_download``/``snapshot_download`` fall back to the cache and, when the file
  is not cached, raise ``LocalEntryNotFoundError`` (its ``__cause__`` is the ``HfHubHTTPError``).
  After ``server.close()`` the client sees ``httpx2.ConnectError`` (same fallback for downloads).

Any bearer token is accepted; private repos only require that one is sent.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["HubServer", "HubEnv", "hub_env", "LFS_SUFFIXES"]

# Binary suffixes of the Hub's default .gitattributes (files stored with Git LFS).
LFS_SUFFIXES = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gz", ".h5", ".joblib", ".mlmodel", ".model",
    ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth",
    ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst",
)
_TYPE_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_API_SUBPATHS = {"revision", "tree", "preupload", "commit", "commits", "refs", "paths-info", "branch", "tag"}
_DATE = "2024-01-01T00:00:00.000Z"


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class _Blob:
    data: bytes
    lfs: bool
    sha256: str = field(init=False)
    git_sha1: str = field(init=False)  # git blob id of the content (what the client computes for "regular")
    oid: str = field(init=False)  # git blob id in the repo tree (of the LFS pointer for LFS files)
    pointer_size: int = field(init=False)

    def __post_init__(self) -> None:
        sha256 = hashlib.sha256(self.data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(self.data)}\n".encode()
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "git_sha1", _git_sha1(self.data))
        object.__setattr__(self, "oid", _git_sha1(pointer) if self.lfs else _git_sha1(self.data))
        object.__setattr__(self, "pointer_size", len(pointer))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1


@dataclass
class _Commit:
    sha: str
    parent: str | None
    files: dict[str, _Blob]
    title: str
    message: str
    date: str


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool = False
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name (incl. refs/pr/N) -> sha
    tags: dict[str, str] = field(default_factory=dict)
    n_prs: int = 0

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision.startswith("refs/heads/") and revision[11:] in self.branches:
            return self.branches[revision[11:]]
        if revision in self.commits:
            return revision
        return None


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None,
                 body: Mapping[str, object] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})
        self.body = dict(body or {})


class HubServer:
    """A Hub-protocol HTTP server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, user: str = "test-user", lfs_min_size: int = 10 * 1024 * 1024,
                 lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES) -> None:
        self.user = user
        self.lfs_min_size = lfs_min_size
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.requests: list[tuple[str, str]] = []  # (method, unquoted path without the query string)
        self.fail_all = False
        self.fail_status = 503
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._seq = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self.host, self.port = self._httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"HubServer:{self.port}", daemon=True)
        self._thread.start()
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- repository content --------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Mapping[str, bytes | str], revision: str = "main", *,
                 repo_type: str = "model", message: str | None = None, private: bool | None = None) -> str:
        """Commit ``files`` (the full snapshot) on branch ``revision`` of ``repo_id``; return the commit sha.

        The repo is created if needed; the new commit's parent is the branch's current head.
        """
        with self._lock:
            repo = self._get_or_create(repo_id, repo_type, private=bool(private))
            if private is not None:
                repo.private = private
            blobs = {_check_path(p): self._blob(p, c.encode() if isinstance(c, str) else bytes(c)) for p, c in files.items()}
            return self._commit(repo, revision, blobs, message or f"Upload {len(blobs)} files")

    def add_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            sha = repo.resolve(revision)
            if sha is None:
                raise KeyError(revision)
            repo.tags[tag] = sha
            return sha

    def resolve(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str | None:
        """Commit sha that ``revision`` points to, or None."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            return repo.resolve(revision) if repo else None

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """Files (path -> bytes) of ``repo_id`` at ``revision``, e.g. to check what an upload committed."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            sha = repo.resolve(revision)
            if sha is None:
                raise KeyError(revision)
            return {p: b.data for p, b in repo.commits[sha].files.items()}

    def repo_exists(self, repo_id: str, *, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def commits(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[str]:
        """Commit shas reachable from ``revision``, newest first."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            return [c.sha for c in _history(repo, repo.resolve(revision))]

    def clear_requests(self) -> None:
        self.requests.clear()

    # -- internals -------------------------------------------------------------------------------------------------
    def _blob(self, path: str, data: bytes) -> _Blob:
        return _Blob(data, lfs=path.lower().endswith(self.lfs_suffixes) or len(data) >= self.lfs_min_size)

    def _get_or_create(self, repo_id: str, repo_type: str, private: bool = False) -> _Repo:
        key = (repo_type, repo_id)
        if key not in self._repos:
            self._repos[key] = _Repo(repo_id, repo_type, private)
        return self._repos[key]

    def _commit(self, repo: _Repo, branch: str, files: dict[str, _Blob], title: str, description: str = "") -> str:
        parent = repo.branches.get(branch)
        self._seq += 1
        h = hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{self._seq}\n{title}\n".encode())
        for path in sorted(files):
            h.update(f"{path}\0{files[path].oid}\n".encode())
        sha = h.hexdigest()
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        message = title + ("\n\n" + description if description else "")
        repo.commits[sha] = _Commit(sha, parent, dict(files), title, message, date)
        repo.branches[branch] = sha
        return sha

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{_TYPE_PREFIXES[repo.repo_type]}{repo.repo_id}"


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid path in repo: {path!r}")
    return path


def _history(repo: _Repo, sha: str | None) -> list[_Commit]:
    out = []
    while sha is not None:
        commit = repo.commits[sha]
        out.append(commit)
        sha = commit.parent
    return out


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        hub = server

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "HubServer/1.0"

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass

    # -- plumbing ------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _handle(self, method: str) -> None:
        raw = self.path
        split = urlsplit(raw)
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.raw_path = split.path
        self.hub.requests.append((method, unquote(split.path)))
        try:
            body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
            if self.hub.fail_all:
                raise _HTTPError(self.hub.fail_status, "Service unavailable (HubServer.fail_all)")
            with self.hub._lock:
                self._route(method, body)
        except _HTTPError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            headers["X-Error-Message"] = e.message
            self._json({"error": e.message, **e.body}, e.status, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug in the server: answer 500 rather than hang the client
            self._json({"error": f"HubServer internal error: {type(e).__name__}: {e}"}, 500)

    @property
    def authenticated(self) -> bool:
        return self.headers.get("Authorization", "").lower().startswith("bearer ")

    # -- routing -------------------------------------------------------------------------------------------------
    def _route(self, method: str, body: bytes) -> None:
        path = self.raw_path
        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami()
        if path == "/api/agent-harnesses" and method == "GET":
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if path.startswith("/api/telemetry/"):
            return self._json({})
        if path == "/api/validate-yaml" and method == "POST":
            return self._json({"errors": [], "warnings": []})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if path == "/api/repos/delete" and method == "DELETE":
            return self._delete_repo(json.loads(body or b"{}"))
        if path.startswith("/api/"):
            parts = path[len("/api/"):].split("/")
            if parts[0] in _API_TYPES and len(parts) >= 2:
                return self._api(method, _API_TYPES[parts[0]], parts[1:], body)
        if "/resolve/" in path and method in ("GET", "HEAD"):
            return self._resolve(path)
        raise _HTTPError(404, f"HubServer: no route for {method} {path}")

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self.authenticated):
            status = 404 if self.authenticated else 401
            raise _HTTPError(status, "Repository not found", "RepoNotFound")
        return repo

    def _commit_for(self, repo: _Repo, revision: str) -> _Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    # -- /{repo}/resolve/{revision}/{filename} ----------------------------------------------------------------------
    def _resolve(self, path: str) -> None:
        before, after = path[1:].split("/resolve/", 1)
        repo_type = "model"
        for t, prefix in _TYPE_PREFIXES.items():
            if prefix and before.startswith(prefix):
                repo_type, before = t, before[len(prefix):]
        if "/" not in after:
            raise _HTTPError(404, "Entry not found", "EntryNotFound")
        revision, filename = after.split("/", 1)
        repo = self._repo(repo_type, unquote(before))
        commit = self._commit_for(repo, unquote(revision))
        filename = unquote(filename)
        blob = commit.files.get(filename)
        base = {"X-Repo-Commit": commit.sha, "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size"}
        if blob is None:
            raise _HTTPError(404, "Entry not found", "EntryNotFound", base)
        size = len(blob.data)
        headers = {**base, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename*=UTF-8\'\'{quote(filename.rsplit("/", 1)[-1])}'}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(size)})
        data, status = blob.data, 200
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            start, end = _parse_range(rng, size)
            if start is None:
                raise _HTTPError(416, "Requested range not satisfiable", None, {"Content-Range": f"bytes */{size}"})
            data, status = blob.data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, data, headers, "application/octet-stream", length=len(data))

    # -- /api/{type}s/{repo_id}/... ---------------------------------------------------------------------------------
    def _api(self, method: str, repo_type: str, parts: list[str], body: bytes) -> None:
        if len(parts) >= 2 and parts[1] not in _API_SUBPATHS:
            repo_id, rest = f"{unquote(parts[0])}/{unquote(parts[1])}", parts[2:]
        else:
            repo_id, rest = unquote(parts[0]), parts[1:]
        rest = [unquote(p) for p in rest]
        repo = self._repo(repo_type, repo_id)
        action = rest[0] if rest else ""
        if method == "GET" and action in ("", "revision"):
            revision = rest[1] if action == "revision" and len(rest) > 1 else "main"
            return self._info(repo, self._commit_for(repo, revision))
        if method == "GET" and action == "tree" and len(rest) >= 2:
            return self._tree(repo, self._commit_for(repo, rest[1]), "/".join(rest[2:]))
        if method == "POST" and action == "paths-info" and len(rest) >= 2:
            return self._paths_info(repo, self._commit_for(repo, rest[1]), body)
        if method == "GET" and action == "refs":
            return self._refs(repo)
        if method == "GET" and action == "commits" and len(rest) >= 2:
            commit = self._commit_for(repo, rest[1])
            return self._json([
                {"id": c.sha, "title": c.title, "message": c.message, "authors": [{"user": self.hub.user}], "date": c.date}
                for c in _history(repo, commit.sha)
            ])
        if method == "POST" and action == "preupload" and len(rest) >= 2:
            return self._preupload(repo, rest[1], json.loads(body or b"{}"))
        if method == "POST" and action == "commit" and len(rest) >= 2:
            return self._commit(repo, rest[1], body)
        if method == "POST" and action == "branch" and len(rest) >= 2:
            return self._create_branch(repo, rest[1], json.loads(body or b"{}"))
        if method == "DELETE" and action == "branch" and len(rest) >= 2:
            if repo.branches.pop(rest[1], None) is None:
                raise _HTTPError(404, f"Invalid rev id: {rest[1]}", "RevisionNotFound")
            return self._json({})
        raise _HTTPError(404, f"HubServer: no route for {method} {self.raw_path}")

    def _info(self, repo: _Repo, commit: _Commit) -> None:
        blobs = str(self.query.get("blobs", [""])[0]).lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            blob = commit.files[path]
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling.update({"size": len(blob.data), "blobId": blob.oid})
                if blob.lfs:
                    sibling["lfs"] = {"size": len(blob.data), "sha256": blob.sha256, "pointerSize": blob.pointer_size}
            siblings.append(sibling)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "author": author,
            "sha": commit.sha, "lastModified": commit.date, "createdAt": _DATE, "private": repo.private,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(len(b.data) for b in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["spaces"] = []
        self._json(info)

    def _entry(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict:
        blob = commit.files.get(path)
        if blob is not None:
            entry: dict = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
        else:
            prefix = path + "/"
            listing = "".join(f"{p}\0{b.oid}\n" for p, b in sorted(commit.files.items()) if p.startswith(prefix))
            entry = {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}
        if expand:
            last = self._last_commit(repo, commit, path)
            entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return entry

    def _last_commit(self, repo: _Repo, commit: _Commit, path: str) -> _Commit:
        def state(c: _Commit):
            return sorted((p, b.oid) for p, b in c.files.items() if p == path or p.startswith(path + "/"))

        history = _history(repo, commit.sha)
        for older, newer in zip(history[1:], history):
            if state(older) != state(newer):
                return newer
        return history[-1]

    def _tree(self, repo: _Repo, commit: _Commit, path: str) -> None:
        recursive = str(self.query.get("recursive", [""])[0]).lower() in ("1", "true")
        expand = str(self.query.get("expand", [""])[0]).lower() in ("1", "true")
        path = path.strip("/")
        prefix = path + "/" if path else ""
        if path and path in commit.files:
            raise _HTTPError(404, f"{path} is a file, not a directory", "EntryNotFound")
        files = [p for p in sorted(commit.files) if p.startswith(prefix)]
        if path and not files:
            raise _HTTPError(404, f"{path} does not exist on {commit.sha}", "EntryNotFound")
        names: dict[str, None] = {}
        for p in files:
            rel = p[len(prefix):].split("/")
            if recursive:
                for i in range(1, len(rel)):
                    names[prefix + "/".join(rel[:i])] = None
                names[p] = None
            else:
                names[prefix + rel[0]] = None
        entries = [self._entry(repo, commit, name, expand) for name in names]
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        self._json(entries)

    def _paths_info(self, repo: _Repo, commit: _Commit, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[0].lower() in ("1", "true")
        dirs = {"/".join(p.split("/")[:i]) for p in commit.files for i in range(1, p.count("/") + 1)}
        out = [self._entry(repo, commit, p.strip("/"), expand) for p in paths
               if p.strip("/") in commit.files or p.strip("/") in dirs]
        self._json(out)

    def _refs(self, repo: _Repo) -> None:
        def ref(name: str, full: str, sha: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": sha}

        branches = [ref(n, f"refs/heads/{n}", s) for n, s in repo.branches.items() if not n.startswith("refs/pr/")]
        prs = [ref(n, n, s) for n, s in repo.branches.items() if n.startswith("refs/pr/")]
        out = {"branches": branches, "converts": [], "tags": [ref(n, f"refs/tags/{n}", s) for n, s in repo.tags.items()]}
        if self.query.get("include_prs"):
            out["pullRequests"] = prs
        self._json(out)

    def _whoami(self) -> None:
        if not self.authenticated:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        user = self.hub.user
        self._json({
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
            "email": f"{user}@example.invalid", "emailVerified": True, "isPro": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "hubserver", "role": "write"}},
        })

    # -- uploads ---------------------------------------------------------------------------------------------------
    def _create_repo(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        if repo_type not in _TYPE_PREFIXES:
            raise _HTTPError(400, f"Invalid repo type: {repo_type}")
        name = payload.get("name") or ""
        if not name or "/" in name:
            raise _HTTPError(400, f"Invalid repo name: {name!r}")
        repo_id = f"{payload.get('organization') or self.hub.user}/{name}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        hub = self.hub
        if (repo_type, repo_id) in hub._repos:  # the Hub's 409 carries the url too (create_repo(exist_ok=True) reads it)
            raise _HTTPError(409, f"You already created this {repo_type} repo: {repo_id}", None, None,
                             {"url": hub._repo_url(hub._repos[(repo_type, repo_id)])})
        repo = hub._get_or_create(repo_id, repo_type, private)
        hub._commit(repo, "main", {}, "initial commit")
        self._json({"url": hub._repo_url(repo), "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload.get('name')}"
        self._repo(repo_type, repo_id)
        del self.hub._repos[(repo_type, repo_id)]
        self._json({})

    def _create_branch(self, repo: _Repo, branch: str, payload: dict) -> None:
        if branch in repo.branches:
            raise _HTTPError(409, f"Reference already exists: refs/heads/{branch}")
        start = self._commit_for(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.sha
        self._json({})

    def _preupload(self, repo: _Repo, revision: str, payload: dict) -> None:
        sha = repo.resolve(revision)
        if sha is None and not self.query.get("create_pr"):
            raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        current = repo.commits[sha].files if sha else {}
        files = []
        for f in payload.get("files", []):
            blob = current.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": blob.git_sha1 if blob is not None else None})
        self._json({"files": files, "commitOid": sha})

    def _commit(self, repo: _Repo, revision: str, body: bytes) -> None:
        hub = self.hub
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HTTPError(400, "Commit body must start with a header line")
        header = lines[0]["value"]
        base = self._commit_for(repo, revision)
        if revision in repo.commits:
            raise _HTTPError(400, f"Cannot commit to a commit sha ({revision}): use a branch")
        parent = header.get("parentCommit")
        if parent and parent != base.sha:
            raise _HTTPError(412, f"A commit has happened since. Parent {parent} is not the head {base.sha}.")
        files = dict(base.files)
        known = {b.sha256: b for r in hub._repos.values() for c in r.commits.values() for b in c.files.values()}
        for item in lines[1:]:
            key, value = item.get("key"), item.get("value", {})
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HTTPError(400, f"Unsupported encoding {value.get('encoding')!r}")
                files[_checked(path)] = hub._blob(path, base64.b64decode(value.get("content", "")))
            elif key == "lfsFile":
                blob = known.get(value.get("oid", ""))
                if blob is None:
                    raise _HTTPError(422, f"LFS object {value.get('oid')} for {path} was never uploaded "
                                          "(HubServer only takes regular uploads)")
                files[_checked(path)] = _Blob(blob.data, lfs=True)
            elif key == "deletedFile":
                if path not in files:
                    raise _HTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise _HTTPError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise _HTTPError(400, f"Unknown commit operation {key!r}")
        title = header.get("summary") or "Commit"
        pr_url = None
        branch = revision
        if self.query.get("create_pr", [""])[0] in ("1", "true", "True"):
            repo.n_prs += 1
            branch = f"refs/pr/{repo.n_prs}"
            repo.branches[branch] = base.sha
            pr_url = f"{hub._repo_url(repo)}/discussions/{repo.n_prs}"
        sha = hub._commit(repo, branch, files, title, header.get("description") or "")
        out = {"success": True, "commitOid": sha, "commitUrl": f"{hub._repo_url(repo)}/commit/{sha}", "hookOutput": ""}
        out["pullRequestUrl"] = pr_url
        self._json(out)


def _checked(path: str) -> str:
    try:
        return _check_path(path)
    except ValueError as e:
        raise _HTTPError(400, str(e)) from None


def _parse_range(header: str, size: int) -> tuple[int | None, int | None]:
    """First range of a ``bytes=`` header as inclusive (start, end), or (None, None) if unsatisfiable."""
    try:
        unit, spec = header.split("=", 1)
        if unit.strip().lower() != "bytes":
            return None, None
        first = spec.split(",")[0].strip()
        start_s, end_s = first.split("-", 1)
        if start_s == "":
            n = int(end_s)
            if n <= 0:
                return None, None
            return max(size - n, 0), size - 1
        start = int(start_s)
        end = int(end_s) if end_s else size - 1
    except ValueError:
        return None, None
    if start >= size or end < start:
        return None, None
    return start, min(end, size - 1)


# ---------------------------------------------------------------------------------------------------------------------
# Pointing the real huggingface_hub client at a server
# ---------------------------------------------------------------------------------------------------------------------
_ENV_UNSET = ("TRANSFORMERS_OFFLINE", "HUGGINGFACE_CO_STAGING", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN",
              "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_ASSETS_CACHE", "HF_TOKEN_PATH",
              "HF_XET_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN")


class HubEnv:
    """What ``hub_env`` yields: the endpoint and paths in use, and an offline switch."""

    def __init__(self, endpoint: str, cache_dir: Path, home: Path, token: str | None) -> None:
        self.endpoint, self.cache_dir, self.home, self.token = endpoint, cache_dir, home, token
        self._constants = None

    def set_offline(self, offline: bool = True) -> None:
        """Switch ``HF_HUB_OFFLINE`` (environment variable and ``huggingface_hub.constants.HF_HUB_OFFLINE``)."""
        os.environ["HF_HUB_OFFLINE"] = "1" if offline else "0"
        if self._constants is not None:
            self._constants.HF_HUB_OFFLINE = bool(offline)

    @property
    def offline(self) -> bool:
        return bool(self._constants.HF_HUB_OFFLINE) if self._constants is not None else False


@contextlib.contextmanager
def hub_env(server: "HubServer | str | None", cache_dir: "str | os.PathLike[str]", *, offline: bool = False,
            token: str | None = "hf_hubserver_test_token", home: "str | os.PathLike[str] | None" = None,
            no_retry_sleep: bool = True) -> Iterator[HubEnv]:
    """Point ``huggingface_hub`` (already imported or not) at ``server`` with its cache in ``cache_dir``.

    ``server`` is a ``HubServer``, an endpoint URL, or None (an endpoint on which nothing listens,
    127.0.0.1:9, for offline-only use). ``home`` (``HF_HOME``; token file, xet cache, agent registry)
    defaults to a fresh temporary folder removed on exit. ``token`` is exported as ``HF_TOKEN``
    (None: no token at all). See the module docstring for what is set and patched.
    """
    import huggingface_hub  # noqa: F401  (import BEFORE touching the environment: we save genuine values)
    from huggingface_hub import constants
    from huggingface_hub import hf_api
    from huggingface_hub.utils import _http

    endpoint = (server.url if isinstance(server, HubServer) else (server or "http://127.0.0.1:9")).rstrip("/")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    own_home = home is None
    home_path = Path(tempfile.mkdtemp(prefix="hf_home_")) if own_home else Path(home)
    home_path.mkdir(parents=True, exist_ok=True)
    registry = home_path / ".agent_harnesses.json"
    if not registry.exists():
        registry.write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))

    env = {
        "HF_ENDPOINT": endpoint, "HF_HOME": str(home_path), "HF_HUB_CACHE": str(cache_dir),
        "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    if token is not None:
        env["HF_TOKEN"] = token
    unset = list(_ENV_UNSET) + ([] if token is not None else ["HF_TOKEN"])
    saved_env = {k: os.environ.get(k) for k in list(env) + unset + ["HF_TOKEN"]}

    host = urlsplit(endpoint).hostname or "127.0.0.1"
    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(getattr(constants, "HF_URL_HOSTS", frozenset())) | {host.lower()},
        "HF_HUB_OFFLINE": bool(offline),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(home_path),
        "HF_HUB_CACHE": str(cache_dir),
        "HUGGINGFACE_HUB_CACHE": str(cache_dir),
        "HF_ASSETS_CACHE": str(home_path / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home_path / "assets"),
        "HF_TOKEN_PATH": str(home_path / "token"),
        "HF_STORED_TOKENS_PATH": str(home_path / "stored_tokens"),
        "HF_XET_CACHE": str(home_path / "xet"),
        "AGENT_HARNESSES_PATH": str(registry),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home_path / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(home_path / ".check_for_skill_update_done"),
    }
    patches: list[tuple[object, str, object]] = [(constants, k, v) for k, v in values.items() if hasattr(constants, k)]
    patches.append((hf_api.api, "endpoint", endpoint))
    for mod_name, attr, value in (("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(cache_dir)),
                                  ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", str(home_path / "assets"))):
        mod = sys.modules.get(mod_name)
        if mod is not None and hasattr(mod, attr):
            patches.append((mod, attr, value))
    if no_retry_sleep and hasattr(_http, "time"):
        real_time = _http.time
        shim = types.SimpleNamespace(**{k: getattr(real_time, k) for k in dir(real_time) if not k.startswith("__")})
        shim.sleep = lambda seconds: None
        patches.append((_http, "time", shim))

    close_session = getattr(_http, "close_session", None) or getattr(_http, "reset_sessions", lambda: None)
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    result = HubEnv(endpoint, cache_dir, home_path, token)
    result._constants = constants
    try:
        for k in unset:
            os.environ.pop(k, None)
        os.environ.update(env)
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        close_session()
        yield result
    finally:
        close_session()
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if own_home:
            shutil.rmtree(home_path, ignore_errors=True)

