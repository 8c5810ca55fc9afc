"""Webhooks: the account's signing secret."""

from __future__ import annotations

from fastapi import APIRouter

from router import wire
from router.deps import CurrentAccount, Rt

router = APIRouter(prefix="/v1", tags=["webhooks"])


@router.get("/webhooks/default/secret", response_model=wire.WebhookSecret)
async def default_secret(account: CurrentAccount, rt: Rt):
    """The secret that signs this account's webhooks (`whsec_…`), created on first use."""
    return {"key": await rt.webhook_secrets.get(account.username)}


@router.post("/webhooks/default/secret/rotate", response_model=wire.WebhookSecret)
async def rotate_secret(account: CurrentAccount, rt: Rt):
    """Replace this account's webhook signing secret (a vendo extension); returns the new one.
    Deliveries are signed with it within 10 seconds on every router replica."""
    return {"key": await rt.webhook_secrets.rotate(account.username)}
