"""The app's front door: what any HTTP request may be, checked before gradio sees it.

A public Space is a server open to anyone, so every request passes through `RequestGuard`:
    * POST goes only to the queue (/queue/join, /call/<name>), uploads, and cancelling a job; the direct
      routes (/run/<name>, /api/<name>, by name or fn_index) and the component server would skip the
      queue's limits, so they answer 404.
    * A request body is at most MAX_BODY_BYTES (uploads: gradio's own max_file_size), so nothing large
      is ever stored with a session; it is read before anything else happens.
    * A call names an event that exists and sends one value per parameter; otherwise a clear 400 message,
      never a Python error. A file argument that is not a sound upload is disarmed (see `disarm_files`).
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import re

import gradio as gr

from diffusion.requests import short_repr

from .settings import MAX_BODY_BYTES, MAX_PATH_CHARS
from .uploads import upload_folder

API = "/gradio_api"
ALLOWED_POST = re.compile(rf"^{API}/(queue/join|call/(v2/)?[\w-]+|upload|cancel|reset)/?$")
QUEUE_ONLY = ("This app takes requests through its queue only: use /gradio_api/call/<name> "
              "(see 'Use via API' at the foot of the page) or gradio_client.")
FILE_KEYS = {"path", "url", "size", "orig_name", "mime_type", "is_stream", "meta"}


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_file_shaped(value) -> bool:
    """{"path": str, …} with only gradio's file keys, each of the type gradio expects."""
    if not isinstance(value, dict) or set(value) - FILE_KEYS:
        return False
    path = value.get("path")
    return (isinstance(path, str) and 0 < len(path) <= MAX_PATH_CHARS and "\x00" not in path
            and all(isinstance(value.get(k), (str, type(None))) for k in ("url", "orig_name", "mime_type"))
            and isinstance(value.get("size"), (int, type(None))) and not isinstance(value.get("size"), bool)
            and isinstance(value.get("is_stream", False), bool) and isinstance(value.get("meta", {}), dict))


def is_sound_upload(value) -> bool:
    """A file argument gradio may handle itself: file-shaped, its path inside the upload folder."""
    if not is_file_shaped(value):
        return False
    folder = str(upload_folder())
    return os.path.commonpath([os.path.realpath(value["path"]), folder]) == folder


def disarm_files(value):
    """Every dict that carries gradio's "meta" key (gradio would copy the file it names into its cache) but is
    not a sound upload loses that key, at any depth: gradio never touches its path, and the endpoint refuses
    it with a clear message (ui/uploads.py)."""
    if isinstance(value, list):
        return [disarm_files(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "meta" in value and not is_sound_upload(value):
        value = {k: v for k, v in value.items() if k != "meta"}
    return {k: disarm_files(v) for k, v in value.items()}


def check_file_input(component, value, where: str) -> None:
    """gradio validates what an image input receives before the endpoint runs: refuse here, clearly, what
    it would refuse with a Python validation error."""
    if value is None:
        return
    if isinstance(component, gr.ImageEditor):
        if not isinstance(value, dict) or set(value) - {"background", "layers", "composite", "id"}:
            raise Refused(400, f"{where}: a drawing is {{\"background\", \"layers\", \"composite\"}}, "
                               f"got {short_repr(value)}")
        files = [value.get("background"), value.get("composite"), *(value.get("layers") or [])]
        if not isinstance(value.get("layers") or [], list) or any(f is not None and not is_sound_upload(f)
                                                                  for f in files):
            raise Refused(400, f"{where}: only files uploaded to this app can be read (upload the image first)")
    elif isinstance(component, (gr.Image, gr.File)) and not is_file_shaped(value):
        raise Refused(400, f"{where}: an image is sent as {{\"path\": \"<the path of an upload>\"}}, "
                           f"got {short_repr(value)}")


class RequestGuard:
    """ASGI middleware (see the module docstring). blocks: the gr.Blocks whose events may be called."""

    def __init__(self, app, blocks):
        self.app, self.blocks = app, blocks

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        try:
            if not ALLOWED_POST.match(path):
                raise Refused(404, QUEUE_ONLY)
            if path.startswith(f"{API}/upload"):  # multipart; gradio bounds it with max_file_size
                return await self.app(scope, receive, send)
            body = await self.read_body(scope, receive)
            body = self.check_call(path, body)
        except Refused as refused:
            return await self.refuse(send, refused)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": headers + [(b"content-length", str(len(body)).encode())]}
        return await self.app(scope, replay, send)

    @staticmethod
    async def read_body(scope, receive) -> bytes:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            raise Refused(413, f"the request is too large: at most {MAX_BODY_BYTES // 1024} KB "
                               f"(upload files through /gradio_api/upload)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "the request was cut off")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise Refused(413, f"the request is too large: at most {MAX_BODY_BYTES // 1024} KB")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def check_call(self, path: str, body: bytes) -> bytes:
        """A queued call: an existing event and one value per parameter. Returns the body, file arguments
        disarmed."""
        kind = path[len(API) + 1:].rstrip("/")
        if kind in ("cancel", "reset"):
            return body
        try:
            payload = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Refused(400, "the request body must be JSON") from None
        if not isinstance(payload, dict):
            raise Refused(400, "the request body must be a JSON object")
        if kind.startswith("call/v2/"):
            fn = self.named_event(kind.removeprefix("call/v2/"))
            names = [name for name in self.parameter_names(fn)]
            unknown = sorted(set(payload) - set(names) - {"oauth_token"})
            if unknown:
                raise Refused(400, f"/{fn.api_name} has the parameters {', '.join(names)}; "
                                   f"unknown: {short_repr(unknown)}")
            return json.dumps(disarm_files(payload)).encode()
        data = payload.get("data")
        if not isinstance(data, list):
            raise Refused(400, 'the request body must be {"data": [one value per parameter]}')
        if kind == "queue/join":
            fn_index = payload.get("fn_index")
            fn = self.blocks.fns.get(fn_index) if isinstance(fn_index, int) and not isinstance(fn_index, bool) else None
            if fn is None:
                raise Refused(404, f"there is no event {short_repr(fn_index)}")
            session = payload.get("session_hash")
            if not isinstance(session, str) or not 0 < len(session) <= 64:
                raise Refused(400, "session_hash must be a short string")
        else:
            fn = self.named_event(kind.removeprefix("call/"))
        everything, api_only = len(fn.inputs), len(self.parameter_names(fn))
        if len(data) not in (everything, api_only):
            names = ", ".join(self.parameter_names(fn))
            raise Refused(400, f"/{fn.api_name or 'this event'} takes {api_only} value(s) ({names}), got {len(data)}")
        where = f"/{fn.api_name or 'this event'}"
        if len(data) == everything:
            for component, value in zip(fn.inputs, data):
                check_file_input(component, value, where)
        else:
            shown = [block for block in fn.inputs if not getattr(block, "skip_api", False)]
            for component, value in zip(shown, data):
                check_file_input(component, value, where)
        return json.dumps({**payload, "data": disarm_files(data)}).encode()

    def named_event(self, api_name: str):
        for fn in self.blocks.fns.values():
            if fn.api_name == api_name and fn.api_visibility != "private":
                return fn
        raise Refused(404, f"there is no endpoint /{short_repr(api_name)[1:-1]}")

    @staticmethod
    @functools.cache
    def parameter_names(fn) -> list[str]:
        """The API's parameter names of an event (its inputs that the API shows); worked out once per event."""
        params = [p for p in inspect.signature(fn.fn).parameters.values()
                  if p.annotation not in ("gr.Request", "Request") and p.name != "request"] if fn.fn else []
        shown = [block for block in fn.inputs if not getattr(block, "skip_api", False)]
        names = [p.name for p in params]
        return names[:len(shown)] if len(names) >= len(shown) else [f"value {i + 1}" for i in range(len(shown))]

    @staticmethod
    async def refuse(send, refused: Refused) -> None:
        body = json.dumps({"detail": refused.message, "error": refused.message}).encode()
        await send({"type": "http.response.start", "status": refused.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
