"""Download one URL with requests. (Minimal version; issue 3 replaces it with the full policy.)"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from .config import FetchConfig, SecurityConfig
from .extract import html_to_text


@dataclass
class Outcome:
    """What the worker sends back for one URL (docs/RING.md, result message)."""

    ok: bool
    status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    text: str = ""
    error: str | None = None
    message: str | None = None


class Fetcher:
    """Fetches URLs for one thread: owns one requests.Session, so keep-alive connections are reused."""

    def __init__(self, cfg: FetchConfig, security: SecurityConfig):
        self.cfg = cfg
        self.security = security
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["User-Agent"] = cfg.user_agent
        self.session.max_redirects = cfg.max_redirects

    def fetch(self, url: str) -> Outcome:
        deadline = time.monotonic() + self.cfg.timeout
        try:
            with self.session.get(url, timeout=self.cfg.timeout, stream=True) as r:
                body = bytearray()
                for chunk in r.iter_content(65536):
                    body += chunk
                    if len(body) > self.cfg.max_bytes:
                        return Outcome(False, r.status_code, r.url, None, "", "too_large", "body too large")
                    if time.monotonic() > deadline:
                        return Outcome(False, r.status_code, r.url, None, "", "timeout", "deadline passed")
                ctype = r.headers.get("Content-Type", "")
                enc = r.encoding if "charset" in ctype.lower() else None
                text = html_to_text(bytes(body).decode(enc) if enc else bytes(body), self.cfg.noscript)
                ok = 200 <= r.status_code < 300
                return Outcome(ok, r.status_code, r.url, ctype.split(";")[0].strip() or None, text,
                               None if ok else "http_status", None if ok else f"HTTP {r.status_code}")
        except requests.Timeout as e:
            return Outcome(False, error="timeout", message=str(e))
        except requests.TooManyRedirects as e:
            return Outcome(False, error="too_many_redirects", message=str(e))
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as e:
            return Outcome(False, error="invalid_url", message=str(e))
        except requests.exceptions.InvalidSchema as e:
            return Outcome(False, error="unsupported_scheme", message=str(e))
        except requests.ConnectionError as e:
            return Outcome(False, error="connect_error", message=str(e))

    def close(self) -> None:
        self.session.close()
