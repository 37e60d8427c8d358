"""The engine API over HTTP, for ``papercrane server``: what the magics and the CLI use
when ``PAPERCRANE_URL`` (and ``PAPERCRANE_TOKEN``) are set.

Values are serialized and fingerprinted here, uploaded once (only what the server lacks),
and decoded here: the server only ever sees bytes and hashes. Runs are submitted and
followed over server-sent events; an interrupt asks the server to abort.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx

from .api import (
    EngineAPI,
)
from .artifacts import typed_fingerprint, unserializable_error, value_fingerprint
from .client_paths import workflow_body
from .client_queries import RemoteQueries
from .client_runs import RemoteRuns
from .errors import (
    ConfigError,
    Conflict,
    CorruptArtifact,
    NotFound,
    SystemError_,
    TooLarge,
    UserError,
)
from .hashing import HashingReader, HashingWriter, algorithm_of
from .model import ArtifactRef, TaskSpec
from .serializers import CloudpickleSerializer, SerializerRegistry, preview, python_type_name
from .units import format_size
from .workflow import WorkflowSpec


class RemoteArtifacts:
    """Fingerprints, presence checks and decoding, done on the client's side."""

    def __init__(self, engine: RemoteEngine) -> None:
        self.engine = engine
        self.registry = SerializerRegistry()

    def fingerprinter(self) -> Any:
        from .fingerprint import Fingerprinter

        return Fingerprinter(self.registry)

    def intact(self, ref: ArtifactRef) -> bool:
        return self.engine.find_artifact(ref.id) is not None

    def load(self, ref: ArtifactRef, verify: bool = True) -> Any:
        serializer = self.registry.get(ref.serializer)
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
            with self.engine._http.stream(
                "GET", f"{self.engine._scope}/artifacts/{ref.id}/bytes"
            ) as response:
                self.engine._check(response)
                for chunk in response.iter_bytes(1 << 20):
                    spool.write(chunk)
            spool.seek(0)
            reader = HashingReader(spool, algorithm_of(ref.hash))
            value = serializer.load(reader)  # type: ignore[arg-type]
            reader.drain()
        if reader.hexdigest() != ref.hash:
            raise CorruptArtifact(f"downloaded bytes of {ref.id} do not match their hash")
        return value


class RemoteEngine(RemoteRuns, RemoteQueries, EngineAPI):
    unpickles = True  # decoding happens here, in the user's own process

    def __init__(
        self,
        url: str,
        token: str,
        project: str = "default",
        domain: str = "development",
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.project = project
        self.domain = domain
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, read=None),
        )
        self._scope = f"/api/v1/projects/{project}/domains/{domain}"
        self.artifacts = RemoteArtifacts(self)
        self._known: dict[str, ArtifactRef] = {}

    @classmethod
    def from_env(cls, project: str | None = None, domain: str | None = None) -> RemoteEngine:
        url = os.environ.get("PAPERCRANE_URL", "")
        token = os.environ.get("PAPERCRANE_TOKEN", "")
        if not token:
            raise ConfigError(
                f"PAPERCRANE_URL is set ({url}) but PAPERCRANE_TOKEN is not; create a token "
                "with `papercrane token create --project P` on the server and export it"
            )
        return cls(
            url,
            token,
            project or os.environ.get("PAPERCRANE_PROJECT", "default"),
            domain or os.environ.get("PAPERCRANE_DOMAIN", "development"),
        )

    def close(self) -> None:
        self._http.close()

    # -- HTTP ----------------------------------------------------------------------------------
    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        if response.is_stream_consumed is False:
            response.read()
        body: Any = None
        try:
            body = response.json()
            detail = body.get("detail", response.text) if isinstance(body, dict) else body
        except ValueError:
            detail = _excerpt(response)
        if not isinstance(detail, str):
            detail = json.dumps(detail)
        status = response.status_code
        where = f"papercrane server {self.url}"
        if status == 404 and "papercrane-error" not in response.headers:
            # Not papercrane's "no such object": its routes are not at this address.
            asked = f"{response.request.method} {response.request.url.path}"
            raise ConfigError(
                f"no papercrane API at {self.url} ({asked} answered 404: {_clip(detail)}); "
                "check PAPERCRANE_URL: the server's address, as `papercrane server` prints "
                "it, with no path after it"
            )
        if status == 403 and "no access to project" in detail:
            # (A notebook's task asked for a project the token was not made for.)
            raise ConfigError(
                f"{where} refused the token: {detail}; set PAPERCRANE_TOKEN to a token for "
                f"project {self.project!r} (`papercrane token create --project {self.project}` "
                "on the server), or use a project this token has (%%task --project P, "
                "%config Papercrane.project = 'P', --project)"
            )
        if status == 403 and "this needs" in detail:
            # (A read token asked to run, a write token to manage tokens.)
            needed = detail.rpartition("this needs ")[2].strip("'\" ")
            raise ConfigError(
                f"{where} refused the token: {detail}; set PAPERCRANE_TOKEN to a token with "
                f"that role for project {self.project!r} (`papercrane token create --project "
                f"{self.project} --role {needed}` on the server)"
            )
        if status in (401, 403):
            raise ConfigError(f"{where} refused the token: {detail}")
        if status == 404:
            raise NotFound(detail)
        if status == 409:
            raise Conflict(detail)
        if status == 413:
            limit = body.get("limit") if isinstance(body, dict) else None
            raise TooLarge(detail, limit if isinstance(limit, int) else None)
        if status < 500:
            raise UserError(detail)
        raise SystemError_(f"{where} failed ({status}): {detail}")

    def _req(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the papercrane server at {self.url} ({exc}); check "
                "PAPERCRANE_URL and that the server is running"
            ) from None
        self._check(response)
        return response.json() if response.content else None

    # -- registration and values ---------------------------------------------------------------
    def register_task(self, spec: TaskSpec, project: str = "", domain: str = "") -> str:
        body = {"spec": spec.to_dict()}
        return self._req("POST", f"{self._scope}/tasks", json=body)["version"]

    def register_workflow(self, spec: WorkflowSpec, project: str = "", domain: str = "") -> str:
        body = {"spec": workflow_body(spec)}
        return self._req("POST", f"{self._scope}/workflows", json=body)["version"]

    def find_artifact(self, artifact_id: str) -> ArtifactRef | None:
        if not artifact_id:
            return None
        try:
            data = self._req("GET", f"{self._scope}/artifacts/{artifact_id}")
        except NotFound:
            return None
        return ArtifactRef.from_dict(data)

    def artifact(self, artifact_id: str) -> ArtifactRef:
        ref = self.find_artifact(artifact_id)
        if ref is None:
            raise NotFound(f"no artifact {artifact_id!r} in {self.project}/{self.domain}")
        return ref

    def put_value(self, value: Any, what: str, fingerprint: str | None = None) -> ArtifactRef:
        """Serialize here; upload only if the server does not have the value yet."""
        registry = self.artifacts.registry
        serializer = registry.for_value(value)
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
            writer = HashingWriter(spool)
            try:
                serializer.dump(value, writer)  # type: ignore[arg-type]
            except Exception as first:
                if serializer.name == CloudpickleSerializer.name:
                    raise unserializable_error(value, what, first) from None
                serializer = registry.get(CloudpickleSerializer.name)
                spool.seek(0)
                spool.truncate()
                writer = HashingWriter(spool)
                try:
                    serializer.dump(value, writer)  # type: ignore[arg-type]
                except Exception as exc:
                    raise unserializable_error(value, what, exc) from None
            digest = writer.hexdigest()
            if fingerprint is None:
                fingerprint = (
                    typed_fingerprint(serializer.name, digest)
                    if serializer.deterministic
                    else value_fingerprint(self.artifacts.fingerprinter(), value, what)
                )
            known = self.find_artifact(fingerprint)
            if known is not None:
                return known
            spool.seek(0)
            params = {
                "hash": digest,
                "serializer": serializer.name,
                "python_type": python_type_name(value)[:200],
                "preview": preview(value)[:200],
            }
            try:
                data = self._req(
                    "PUT",
                    f"{self._scope}/artifacts/{fingerprint}",
                    params=params,
                    content=_chunks(spool),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(writer.size),
                    },
                )
            except TooLarge as exc:
                raise self._too_large(what, writer.size, exc) from None
        return ArtifactRef.from_dict(data)

    def _too_large(self, what: str, size: int, refusal: TooLarge) -> TooLarge:
        """The server's size refusal (413) knows bytes, not names: it is said again
        here, where the variable (``what``) is known, with the ways around it."""
        said = format_size(refusal.limit) if refusal.limit is not None else str(refusal)
        return TooLarge(
            f"{what} is {format_size(size)} serialized, over the upload limit of the "
            f"papercrane server at {self.url} ({said}); ask the server's administrator for "
            "a larger `papercrane server --max-upload`, pass a smaller value, or pass where "
            "the data is (a path or URL the server can read) and load it inside the task"
        )

    def load(self, ref: ArtifactRef) -> Any:
        return self.artifacts.load(ref)


class TokenAdmin:
    """The server's tokens, managed over its API (``papercrane token ...`` with
    ``PAPERCRANE_URL`` set) with an admin token: the operator's for every project, a
    project's admin token for that project's. A token made on the client's own machine
    would land in a database the server never reads."""

    def __init__(self, engine: RemoteEngine) -> None:
        self.engine = engine

    def create(self, project: str, role: str, name: str = "") -> str:
        body = {"project": project, "role": role, "name": name}
        return str(self.engine._req("POST", "/api/v1/tokens", json=body)["token"])

    def list(self) -> list[dict[str, Any]]:
        return list(self.engine._req("GET", "/api/v1/tokens"))

    def revoke(self, token_id: str) -> int:
        return int(self.engine._req("DELETE", f"/api/v1/tokens/{token_id}")["revoked"])


def _clip(text: str, most: int = 160) -> str:
    """``text`` on one line, cut to ``most`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


def _excerpt(response: httpx.Response) -> str:
    """A short excerpt of an answer that is not JSON (a proxy's or another server's
    page): its HTML title if it has one, else its text without tags, clipped."""
    text = response.text
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    if title and title.group(1).strip():
        text = title.group(1)
    else:
        text = re.sub(r"<(script|style)\b.*?</\1>|<[^>]+>", " ", text, flags=re.I | re.S)
    return _clip(text) or f"(an empty {response.headers.get('content-type', 'answer')})"


def _chunks(handle: Any) -> Iterator[bytes]:
    while data := handle.read(1 << 20):
        yield data
