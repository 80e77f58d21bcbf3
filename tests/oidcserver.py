"""A real OpenID Connect provider process (tests/oidc/provider.mjs, npm oidc-provider) on 127.0.0.1 that
stands in for Google, and helpers that drive its authorization-code + PKCE flow over HTTP with `requests`.

Each authorization shows the provider's login page (email, email_verified, sub, name) and then its consent
page (allow / deny); see provider.mjs. The same email always gets the same `sub` unless one is given.
"""
from __future__ import annotations

import atexit
import base64
import collections
import hashlib
import os
import secrets
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

from .liveserver import free_port

HERE = Path(__file__).resolve().parent / "oidc"
SCRIPT = HERE / "provider.mjs"
START_TIMEOUT = 15.0
TIMEOUT = 10  # seconds, for each HTTP request to the provider


def sub_for(email: str) -> str:
    """The `sub` the provider gives `email` when the login form leaves `sub` empty."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Forms(HTMLParser):
    """Collects the action of every <form id=...> on a page."""

    def __init__(self):
        super().__init__()
        self.actions: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        """Record a form's id and action."""
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id"):
            self.actions[attrs["id"]] = attrs.get("action") or ""


class OIDCProvider:
    """The provider process: start(), stop(), dynamic client registration, and flows driven over HTTP."""

    def __init__(self):
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=200)
        self.metadata: dict = {}
        self._clients: dict[str, dict] = {}  # client_id -> registration response
        self._ready = threading.Event()

    @property
    def issuer(self) -> str:
        """The issuer, http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_url(self) -> str:
        """The OpenID discovery document's URL."""
        return f"{self.issuer}/.well-known/openid-configuration"

    # --- the process ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the provider on a free port and wait for its READY line (an error with its output if not)."""
        if not (HERE / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"{HERE}/node_modules is missing: run `npm ci --prefix tests/oidc`"
                               " (scripts/test does)")
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not found: the OpenID provider of the tests runs on Node.js")
        atexit.register(self.stop)
        for _attempt in range(3):  # another process may take the free port before node binds it
            self.port, self._ready = free_port(), threading.Event()
            self.output = collections.deque(maxlen=200)
            self.process = subprocess.Popen(
                [node, str(SCRIPT), str(self.port)], cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, env={**os.environ, "OIDC_PROVIDER_WATCH_STDIN": "1"})
            threading.Thread(target=self._drain, args=(self.process, self.output, self._ready),
                             name="oidc-provider-output", daemon=True).start()
            self._ready.wait(START_TIMEOUT)
            if any(line.startswith("READY ") for line in list(self.output)):
                try:
                    self.metadata = requests.get(self.discovery_url, timeout=TIMEOUT).json()
                except Exception:
                    self.stop()
                    raise
                return
            try:
                code = self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            if code != 3:  # 3: the port was taken
                break
        why = "timeout" if code is None else f"exit code {code}"
        raise RuntimeError(f"the OpenID provider did not start ({why}):\n" + "".join(self.output))

    @staticmethod
    def _drain(process, output, ready) -> None:
        """Keep the process's output (stdout and stderr) and signal READY, or its exit."""
        for line in process.stdout:
            output.append(line)
            if line.startswith("READY "):
                ready.set()
        ready.set()  # exited: stop waiting

    def stop(self) -> None:
        """Stop the process: terminate, wait, kill if it lingers (idempotent)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass

    # --- clients and flows ----------------------------------------------------------------------------------

    def register_client(self, redirect_uris: list[str], **metadata) -> tuple[str, str]:
        """Register a confidential client by dynamic registration (POST /reg); (client_id, client_secret)."""
        body = {"redirect_uris": list(redirect_uris), "grant_types": ["authorization_code"],
                "response_types": ["code"], **metadata}
        response = requests.post(self.metadata["registration_endpoint"], json=body, timeout=TIMEOUT)
        if response.status_code != 201:
            raise RuntimeError(f"client registration failed: {response.status_code} {response.text}")
        client = response.json()
        self._clients[client["client_id"]] = client
        return client["client_id"], client["client_secret"]

    def _redirect_uri(self, client_id: str, redirect_uri: str | None) -> str:
        if redirect_uri:
            return redirect_uri
        if client_id not in self._clients:
            raise ValueError(f"client {client_id} was not registered here: pass redirect_uri")
        return self._clients[client_id]["redirect_uris"][0]

    def authorization_url(self, client_id: str, redirect_uri: str | None = None, *, state: str | None = None,
                          nonce: str | None = None, code_challenge: str | None = None,
                          scope: str = "openid email profile", **params) -> str:
        """An authorization request URL (code flow; PKCE S256 when code_challenge is given)."""
        query = {"response_type": "code", "client_id": client_id,
                 "redirect_uri": self._redirect_uri(client_id, redirect_uri), "scope": scope,
                 **({"state": state} if state else {}), **({"nonce": nonce} if nonce else {}),
                 **({"code_challenge": code_challenge, "code_challenge_method": "S256"}
                    if code_challenge else {}),
                 **params}
        return f"{self.metadata['authorization_endpoint']}?{urlencode(query)}"

    def authorize(self, url: str, email: str, email_verified: bool = True, sub: str | None = None,
                  name: str | None = None, consent: bool = True) -> str:
        """Follow an authorization request through the login and consent pages; the final redirect's URL."""
        browser = requests.Session()
        response = browser.get(url, allow_redirects=False, timeout=TIMEOUT)
        for _step in range(20):
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                if not location.startswith(self.issuer + "/"):
                    return location  # to the relying party: not followed
                response = browser.get(location, allow_redirects=False, timeout=TIMEOUT)
                continue
            forms = _Forms()
            forms.feed(response.text)
            if response.status_code == 200 and "login-form" in forms.actions:
                fields = {"email": email, "sub": sub or "", "name": name or ""}
                if email_verified:
                    fields["email_verified"] = "true"
                action = forms.actions["login-form"]
            elif response.status_code == 200 and "consent-allow-form" in forms.actions:
                fields, action = {}, forms.actions["consent-allow-form" if consent else "consent-deny-form"]
            else:
                break
            response = browser.post(urljoin(response.url, action), data=fields, allow_redirects=False,
                                     timeout=TIMEOUT)
        raise RuntimeError(f"unexpected provider response {response.status_code} at {response.url}:\n"
                           f"{response.text}")

    def code(self, client_id: str, email: str, email_verified: bool = True, sub: str | None = None,
             name: str | None = None, nonce: str | None = None,
             redirect_uri: str | None = None) -> tuple[str, str]:
        """Run the flow up to the authorization code; (code, code_verifier), the code not yet redeemed."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        url = self.authorization_url(client_id, redirect_uri, state=state, nonce=nonce,
                                     code_challenge=challenge)
        callback = self.authorize(url, email, email_verified=email_verified, sub=sub, name=name)
        query = parse_qs(urlsplit(callback).query)
        if query.get("state") != [state] or "code" not in query:
            raise RuntimeError(f"no code for state {state!r} in {callback}")
        return query["code"][0], verifier

    def redeem(self, client_id: str, client_secret: str, code: str, code_verifier: str,
               redirect_uri: str | None = None) -> requests.Response:
        """POST the code to the token endpoint, authenticated as the client registered; the raw response."""
        client = self._clients.get(client_id, {})
        data = {"grant_type": "authorization_code", "code": code, "code_verifier": code_verifier,
                "redirect_uri": self._redirect_uri(client_id, redirect_uri)}
        auth = None
        if client.get("token_endpoint_auth_method") == "client_secret_post":
            data.update(client_id=client_id, client_secret=client_secret)
        else:
            auth = (client_id, client_secret)  # client_secret_basic, the registration default
        return requests.post(self.metadata["token_endpoint"], data=data, auth=auth, timeout=TIMEOUT)

    def id_token(self, client_id: str, client_secret: str, email: str, email_verified: bool = True,
                 sub: str | None = None, name: str | None = None, nonce: str | None = None,
                 redirect_uri: str | None = None) -> str:
        """An ID token the provider really issued to the client, through the full code + PKCE flow."""
        code, verifier = self.code(client_id, email, email_verified=email_verified, sub=sub, name=name,
                                   nonce=nonce, redirect_uri=redirect_uri)
        response = self.redeem(client_id, client_secret, code, verifier, redirect_uri)
        if response.status_code != 200:
            raise RuntimeError(f"token endpoint: {response.status_code} {response.text}")
        return response.json()["id_token"]
