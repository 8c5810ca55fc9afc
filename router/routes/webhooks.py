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
