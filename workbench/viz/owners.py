"""Who may change what on a served dashboard.

Single-user mode (a dashboard on your own machine): every page may cancel any job and delete or tag any run.
Shared mode: a page may cancel only the jobs it queued and delete or tag only the runs its jobs stored; everything
stays visible and may be opened, followed and exported.

Who owns a job or run: the signed-in user where the server authenticates (`panel serve --basic-auth …` or an
OAuth provider; the name survives reloads and other browsers), else the browser session (a reload is a new
session). Runs made outside the dashboard (CLI, notebooks) belong to the store's own user: on a shared server no
page may delete them.

The mode: $WORKBENCH_SHARED (1/0, set by `workbench serve --shared|--single-user`) wins; else a page is shared
when its visitor signed in or connects from another machine, single-user when it connects from this one (loopback).
Behind a reverse proxy on the same machine every visitor looks local: set WORKBENCH_SHARED=1 there.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

import panel as pn

from ..errors import NotOwner


def _context():
    return pn.state.curdoc.session_context if pn.state.curdoc is not None else None


def current() -> str:
    """The owner a page's jobs and runs get: 'user:<name>' when signed in, else 'session:<id>'; '' outside a
    served page (a notebook, the CLI)."""
    ctx = _context()
    if ctx is None:
        return ""
    user = pn.state.user
    if user:
        return f"user:{user}"
    sid = getattr(ctx, "id", "") or ""
    return f"session:{sid}" if sid else ""


def _address() -> str:
    """The visitor's address as the server sees it (behind a proxy, `panel serve --use-xheaders` makes it the
    browser's own); '' where unknown."""
    ctx = _context()
    request = getattr(ctx, "request", None) if ctx is not None else None
    return str(getattr(request, "remote_ip", "") or "") if request is not None else ""


def client() -> str:
    """Who a shared server's quotas count: the signed-in user, else the browser's address (a new tab or a reload is
    a new session, but not a new visitor)."""
    if pn.state.user:
        return f"user:{pn.state.user}"
    address = _address()
    return f"address:{address}" if address else current()


def shared() -> bool:
    """Whether this page is on a shared server (see the module's docstring)."""
    env = os.environ.get("WORKBENCH_SHARED", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    if _context() is None:
        return False  # a notebook's kernel: its user owns everything it sees
    if pn.state.user:
        return True
    try:
        return not ipaddress.ip_address(_address()).is_loopback
    except (TypeError, ValueError):
        return True  # unknown: the careful answer


@dataclass(frozen=True)
class Visitor:
    """Who a page is for, taken when the page is made (in its session): its owner name, whether the server is
    shared and, if it is, the client its quotas count (see client()). Callbacks and threads ask it, not the session
    state of the moment."""

    owner: str = ""
    shared: bool = False
    client: str = ""  # '' where not shared: a single user's jobs have no per-visitor limits or time limit

    @classmethod
    def here(cls) -> "Visitor":
        is_shared = shared()
        return cls(current(), is_shared, client() if is_shared else "")

    @property
    def acting(self) -> str | None:
        """Who asks, for an owner check: None in single-user mode (any page may change anything)."""
        return self.owner if self.shared else None

    def may_change(self, owner: str) -> bool:
        """Whether this page may cancel, delete or tag a job or run owned by `owner`."""
        return not self.shared or (bool(self.owner) and owner == self.owner)

    def check(self, owners: dict[str, str], what: str) -> None:
        """NotOwner naming the runs (id -> owner) this page may not `what` ("delete", "tag"), before any is
        touched."""
        theirs = [i for i, o in owners.items() if not self.may_change(o)]
        if theirs:
            shown = ", ".join(theirs[:4]) + (f" and {len(theirs) - 4} more" if len(theirs) > 4 else "")
            raise NotOwner(f"{len(theirs)} of the ticked runs are not yours ({shown}): on a shared server a page "
                           f"may {what} only the runs its own jobs stored. Nothing was changed.")

    def describe(self, owner: str) -> str:
        """An owner as a table shows it: 'you', a signed-in user's name, 'another session', or 'this machine'."""
        if owner and owner == self.owner:
            return "you"
        if owner.startswith("user:"):
            return owner[5:]
        if owner.startswith("session:"):
            return "another session"
        return "this machine"
