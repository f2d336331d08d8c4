"""A small in-memory stand-in for the Hugging Face Hub API, served over real HTTP on 127.0.0.1.

The Hub cannot be reached from the test machines, and no local Hub with upload support ships in any registry, so
tests that publish run the real `huggingface_hub` client against this server instead. It implements exactly the
endpoints that `HfApi.whoami`, `create_repo` and `upload_folder` call (huggingface_hub 2.4):

    GET  /api/whoami-v2
    GET  /api/agent-harnesses
    POST /api/repos/create
    POST /api/validate-yaml
    POST /api/{models,datasets}/{namespace}/{name}/preupload/{revision}
    POST /api/{models,datasets}/{namespace}/{name}/commit/{revision}

Every file is answered as a "regular" (inline base64) upload, so the commit's NDJSON body carries the content and
no LFS or Xet storage is involved. Requests are recorded for assertions; failures (an HTTP status, or `DROP`: the
connection is closed without an answer) can be injected per endpoint.

Usage:

    with FakeHub(users={"hf_secret": FakeHub.user("alice", role="write")}) as hub:
        HfApi(endpoint=hub.url, token="hf_secret").whoami()
        hub.fail("POST", "/api/repos/create", [500, 500])   # the next two calls answer 500
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

_REPO_PATH = re.compile(
    r"^/api/(?P<type>models|datasets)/(?P<repo_id>[^/]+/[^/]+)/(?P<action>preupload|commit)/(?P<rev>.+)$")


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    body: bytes


@dataclass
class Commit:
    repo_id: str
    repo_type: str
    summary: str
    files: dict = field(default_factory=dict)  # path -> bytes


class FakeHub:
    """In-memory Hub: `users` maps a token to the JSON that `/api/whoami-v2` returns for it."""

    DROP = 0  # as an injected status: close the connection without answering (a dropped connection)

    def __init__(self, users: dict | None = None):
        self.users = dict(users or {})
        self.requests: list[Request] = []
        self.repos: dict[tuple[str, str], dict] = {}  # (repo_type, repo_id) -> {path: bytes}
        self.commits: list[Commit] = []
        self._failures: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        # A short poll interval keeps shutdown (and so each test using the server) fast.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @staticmethod
    def user(name: str, role: str = "write", orgs: tuple = (), fine_grained: dict | None = None) -> dict:
        """The whoami-v2 answer for a user token. `role` is "write", "read" or "fineGrained"."""
        access_token = {"displayName": "test-token", "role": role}
        if fine_grained is not None:
            access_token["fineGrained"] = fine_grained
        return {
            "type": "user",
            "name": name,
            "orgs": [{"name": org, "roleInOrg": "write"} for org in orgs],
            "auth": {"type": "access_token", "accessToken": access_token},
        }

    def fail(self, method: str, path: str, statuses: list[int], message: str = "injected failure") -> None:
        """Answer the next `len(statuses)` requests to `method path` (exact path) with these statuses (`DROP`: no
        answer at all)."""
        self._failures[(method, path)] = [(status, message) for status in statuses]

    def files(self, repo_id: str, repo_type: str = "model") -> dict:
        """The files of a repository on its main branch, as {path: bytes}."""
        return self.repos[(repo_type, repo_id)]

    def calls(self, method: str | None = None, path_prefix: str = "") -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    # ------------------------------------------------------------------ request handling (server thread)

    def handle(self, method: str, path: str, authorization: str | None, body: bytes) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(Request(method, path, authorization, body))
            failures = self._failures.get((method, path))
            if failures:
                status, message = failures.pop(0)
                return status, {"error": message}
        if method == "GET" and path == "/api/agent-harnesses":
            return 200, {"standardEnvVars": [], "harnesses": {}}
        who = self.users.get((authorization or "").removeprefix("Bearer ").strip())
        if who is None:
            return 401, {"error": "Invalid credentials in Authorization header"}
        if method == "GET" and path == "/api/whoami-v2":
            return 200, who
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        if who["auth"]["accessToken"]["role"] == "read":
            return 403, {"error": "You don't have the rights to write with this token"}
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body), who)
        match = _REPO_PATH.match(path)
        if method == "POST" and match:
            repo_type = match["type"][:-1]
            if (repo_type, match["repo_id"]) not in self.repos:
                return 404, {"error": "Repository not found"}
            if match["action"] == "preupload":
                return self._preupload(json.loads(body))
            return self._commit(repo_type, match["repo_id"], body)
        return 404, {"error": f"FakeHub does not implement {method} {path}"}

    def _validate_yaml(self, payload: dict) -> tuple[int, dict]:
        front_matter = re.match(r"^---\n(.*?)\n---\n", payload["content"], flags=re.DOTALL)
        try:
            metadata = yaml.safe_load(front_matter.group(1)) if front_matter else None
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}]}
        warnings = [] if metadata else [{"message": "empty or missing YAML metadata"}]
        return 200, {"errors": [], "warnings": warnings}

    def _create_repo(self, payload: dict, who: dict) -> tuple[int, dict]:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or who['name']}/{payload['name']}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                return 409, {"error": "You already created this repo", "url": self._repo_url(repo_type, repo_id)}
            self.repos[(repo_type, repo_id)] = {}
        return 200, {"url": self._repo_url(repo_type, repo_id)}

    def _preupload(self, payload: dict) -> tuple[int, dict]:
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        return 200, {"files": files, "commitOid": "0" * 40}

    def _commit(self, repo_type: str, repo_id: str, body: bytes) -> tuple[int, dict]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        commit = Commit(repo_id=repo_id, repo_type=repo_type, summary=header["summary"])
        for line in lines:
            if line["key"] == "file":
                commit.files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] != "header":
                return 400, {"error": f"FakeHub only accepts inline files, got {line['key']!r}"}
        oid = hashlib.sha1(body).hexdigest()
        with self._lock:
            self.commits.append(commit)
            self.repos[(repo_type, repo_id)].update(commit.files)
        return 200, {"commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{oid}", "commitOid": oid}

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self._read_body()
            status, payload = hub.handle(self.command, self.path.split("?")[0], self.headers.get("Authorization"), body)
            if status == FakeHub.DROP:
                self.close_connection = True
                return
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().strip(), 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format, *args) -> None:  # keep test output clean
            pass

    return Handler
