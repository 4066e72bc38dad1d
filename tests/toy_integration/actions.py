"""The toy's one action: ring the bell, through the toy's own settings and secret."""

from __future__ import annotations

from typing import Annotated

import httpx
from pydantic import BaseModel, Field

from tests.toy_integration import TOKEN_SECRET, integration
from tocsin.actions import ActionContext, action
from tocsin.outbound import trusting


class Rung(BaseModel):
    rings: int
    heard: str
    url: str


@action(
    "toy.ring_bell",
    destructive=False,
    secrets=(TOKEN_SECRET,),
    describe=lambda times: f"ring the toy bell {times} times",
)
def ring_bell(
    context: ActionContext,
    *,
    times: Annotated[int, Field(ge=1, le=5, description="How many times")] = 1,
) -> Rung:
    """Ring the toy bell."""
    settings = integration.settings_of(context.settings)
    verify = trusting(settings.ca_bundle)
    answer = httpx.post(
        f"{settings.url}/ring",
        json={"times": times, "greeting": settings.greeting},
        headers={"Authorization": f"Bearer {context.secret(TOKEN_SECRET)}"},
        verify=verify if verify is not None else True,
        timeout=10,
    )
    answer.raise_for_status()
    return Rung(rings=answer.json()["rings"], heard=answer.json()["heard"], url=settings.url)
