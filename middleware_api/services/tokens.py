"""Personal access tokens: a user's own API keys that act as that user.

A token is shown once at creation; only its SHA-256 digest is stored, as the
item's sort key, so a request's key is looked up in one read.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid

from middleware_api.ports.tables import Item, Page, Table, query_all
from middleware_api.services.errors import BadRequest
from middleware_api.services.passwords import digest_secret
from middleware_api.services.permissions import Actor
from middleware_api.services.users import UserService

KIND = "token"
PREFIX = "esd_pat_"
TOKEN_NAME = re.compile(r"^[\w .@+-]{1,64}$")
MAX_LIFETIME_DAYS = 3650


class TokenService:
    """Create, list and revoke the acting user's tokens; resolve a token to its user."""

    def __init__(self, table: Table, users: UserService) -> None:
        self.table = table
        self.users = users

    @staticmethod
    def looks_like_token(key: str) -> bool:
        return key.startswith(PREFIX)

    def actor_for(self, token: str) -> Actor | None:
        """The user a token acts for, or None if it is unknown, expired or its user is gone."""
        item = self.table.get({"kind": KIND, "sort_key": digest_secret(token)})
        if item is None or (item.get("expires") and item["expires"] < time.time()):
            return None
        user = self.users.get(item["token_owner"])
        return self.users.actor(user["username"]) if user else None

    def create(self, actor: Actor, name: str, expires_in_days: int | None) -> tuple[str, Item]:
        """A new token for the actor: (the secret, shown once; its public record)."""
        if not TOKEN_NAME.match(name):
            raise BadRequest("token name must be 1-64 letters, digits, spaces or _.@+-")
        if expires_in_days is not None and not 1 <= expires_in_days <= MAX_LIFETIME_DAYS:
            raise BadRequest(f"expires_in_days must be between 1 and {MAX_LIFETIME_DAYS}")
        secret = PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        item: Item = {
            "kind": KIND,
            "sort_key": digest_secret(secret),
            "token_id": uuid.uuid4().hex[:16],
            "token_owner": actor.username,
            "name": name,
            "created": now,
        }
        if expires_in_days:
            item["expires"] = now + expires_in_days * 86400
        self.table.put(item, must_not_exist=True)
        return secret, public_token(item)

    def list(self, actor: Actor, limit: int, cursor: str | None) -> Page:
        page = self.table.query(actor.username, index="by_owner", limit=limit, cursor=cursor, descending=True)
        return Page([public_token(item) for item in page.items], page.cursor)

    def revoke(self, actor: Actor, token_ids: list[str]) -> None:
        """Revoke the actor's own tokens with these ids (others' ids are ignored)."""
        wanted = set(token_ids)
        for item in query_all(self.table, actor.username, index="by_owner"):
            if item["token_id"] in wanted:
                self.table.delete(self.table.spec.key_of(item))


def public_token(item: Item) -> Item:
    return {
        "token_id": item["token_id"],
        "name": item["name"],
        "username": item["token_owner"],
        "created": item["created"],
        "expires": item.get("expires"),
    }
