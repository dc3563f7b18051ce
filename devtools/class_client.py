"""A light student for load tests: calls the app's public API over HTTP and fetches what a browser fetches.

Each `Student` is one HTTP client of its own (its own connections; an address of its own through
X-Forwarded-For, as a Space's proxy sets it, so the app's per-client limits see distinct students). `call`
posts to /gradio_api/call/<name>, reads the event stream as gradio_client does, and fetches every file that
each update names (images, GIFs, the player's sheets of frames) as soon as the update comes, as a browser
would. No gradio_client: thirty of those take about one of a 2-core machine's cores and halve the server
they measure.
"""
from __future__ import annotations

import functools
import json
import re
import time

import httpx

FILE_REFERENCE = re.compile(r"gradio_api/file=[^\"'()\s<>&]+")  # a file named inside HTML (the player's sheets)


def file_urls(value, base_url: str) -> list[str]:
    """Every file URL that one streamed update names: FileData entries ({"url": ...}) and file= references
    inside strings (HTML), made absolute against base_url (which ends with '/')."""
    found: list[str] = []

    def walk(v):
        if isinstance(v, dict):
            if isinstance(v.get("url"), str) and "gradio_api/file=" in v["url"]:
                found.append(v["url"])
            for item in v.values():
                if item is not v.get("url"):
                    walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, str):
            found.extend(base_url + ref for ref in FILE_REFERENCE.findall(v))

    walk(value)
    return list(dict.fromkeys(found))


class Student:
    """One student's HTTP client. `call` returns {'first': s to the first streamed output, 'done': s to the end,
    'ok': bool, 'error': str, 'updates': streamed outputs, 'update_times': s to each, 'files': files fetched,
    'failed_fetches': [errors]}."""

    def __init__(self, url: str, address: str, fetch_files: bool = True, session: str | None = None):
        """session: a session hash for every call, so that calls share the session's state as one page's do
        (None: each call is a session of its own, as an API client's are)."""
        self.url, self.fetch_files, self.session = url, fetch_files, session
        # idle connections are dropped after 1 s: uvicorn closes them after 5 s, httpx's default is also 5 s,
        # and a request sent on a connection just as the server closes it fails ("Server disconnected")
        self.http = httpx.Client(timeout=600, headers={"x-forwarded-for": address},
                                 limits=httpx.Limits(keepalive_expiry=1.0))

    def call(self, api_name: str, values: dict | None = None, **more) -> dict:
        start = time.perf_counter()
        values = {**(values or {}), **more}
        body = {"data": self.data(api_name, values), **({"session_hash": self.session} if self.session else {})}
        posted = self.http.post(f"{self.url}gradio_api/call/{api_name}", json=body)
        posted.raise_for_status()
        result = {"first": None, "ok": False, "error": "", "updates": 0, "update_times": [], "files": 0,
                  "failed_fetches": []}
        with self.http.stream("GET", f"{self.url}gradio_api/call/{api_name}/{posted.json()['event_id']}") as s:
            event = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    if event in ("generating", "complete") and result["first"] is None:
                        result["first"] = time.perf_counter() - start
                    result["ok"] = event == "complete"
                elif line.startswith("data: ") and event in ("generating", "complete"):
                    result["updates"] += 1
                    result["update_times"].append(time.perf_counter() - start)
                    if self.fetch_files:
                        self.fetch(json.loads(line[6:]), result)
                elif line.startswith("data: ") and event == "error":
                    result["error"] = line[6:200]
        result["done"] = time.perf_counter() - start
        return result

    def fetch(self, update, result: dict) -> None:
        """Fetch every file the update names, checking that each arrives whole (status 200, all its bytes)."""
        for url in file_urls(update, self.url):
            try:
                response = self.http.get(url)
                declared = response.headers.get("content-length")
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}")
                if declared is not None and int(declared) != len(response.content):
                    raise RuntimeError(f"{len(response.content)} of {declared} bytes")
                result["files"] += 1
            except Exception as e:  # noqa: BLE001 — every way a fetch can fail is counted
                result["failed_fetches"].append(f"{url.rsplit('/', 2)[-2:]}: {type(e).__name__}: {e}"[:300])

    def data(self, api_name: str, values: dict) -> list:
        """The endpoint's parameters in the app's order: these values, else the app's own defaults (read once
        from /gradio_api/info, so a new parameter with a default needs no change here)."""
        return [values.get(name, default) for name, default in api_parameters(self.url)[api_name]]


@functools.cache
def api_parameters(url: str) -> dict[str, list[tuple[str, object]]]:
    """{endpoint: [(parameter name, its default), ...]} as the app describes its API."""
    info = httpx.get(f"{url}gradio_api/info").json()["named_endpoints"]
    return {name.strip("/"): [(p["parameter_name"], p.get("parameter_default")) for p in e["parameters"]]
            for name, e in info.items()}


EXCEPTION_LINE = re.compile(r"Traceback \(most recent call last\)|^\S*(Error|Exception)\b|Exception in ASGI",
                            re.MULTILINE)


def exceptions_in_log(text: str) -> list[str]:
    """The lines of an app's log that report an exception (a traceback's first line, an 'XError: …' line)."""
    return [line for line in text.splitlines() if EXCEPTION_LINE.search(line)]
