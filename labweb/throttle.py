"""Failed sign-ins, counted per client address and user name in the shared cache (Redis): after
`LABWEB_LOGIN_MAX_FAILURES` of them, that name is refused from that address for `LABWEB_LOGIN_LOCKOUT_SECONDS`,
so passwords cannot be guessed at speed. Both the sign-in page and the API's token endpoint ask here."""

import hashlib
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache

T = TypeVar("T")


def _key(address: str, username: str) -> str:
    digest = hashlib.sha256(f"{address}\0{username.strip().lower()}".encode()).hexdigest()
    return f"labweb:login-failures:{digest}"


def client_address(request) -> str:
    """The client's address as the outermost of `LABWEB_PROXY_COUNT` trusted proxies saw it. Entries left of
    that one were written by the client and are ignored; a header shorter than the proxy chain is not trusted."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    proxies = settings.LABWEB_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < proxies:
        return remote
    return forwarded[-proxies][:64]


def login_refusal(address: str, username: str) -> str | None:
    """The message that refuses this sign-in, or None when it may be tried."""
    failures = cache.get(_key(address, username), 0)
    if failures < settings.LABWEB_LOGIN_MAX_FAILURES:
        return None
    minutes = max(1, round(settings.LABWEB_LOGIN_LOCKOUT_SECONDS / 60))
    return (
        f"Too many failed sign-ins for this user name from your address: try again in {minutes} minute"
        f"{'s' if minutes != 1 else ''}, or ask an administrator to reset the password."
    )


def login_failed(address: str, username: str) -> None:
    key = _key(address, username)
    # The window starts at the first failure and is not extended by later ones.
    cache.add(key, 0, timeout=settings.LABWEB_LOGIN_LOCKOUT_SECONDS)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=settings.LABWEB_LOGIN_LOCKOUT_SECONDS)


def login_succeeded(address: str, username: str) -> None:
    cache.delete(_key(address, username))


def sign_in_limited(
    address: str, username: str, attempt: Callable[[], T], *, refuse: Callable[[str], Exception], failure: type
) -> T:
    """Run the sign-in `attempt` unless this name failed too often from `address`: a `failure` it raises is
    counted, a success clears the count, a refusal raises `refuse(message)`."""
    refusal = login_refusal(address, username)
    if refusal:
        raise refuse(refusal)
    try:
        result = attempt()
    except failure:
        login_failed(address, username)
        raise
    login_succeeded(address, username)
    return result
