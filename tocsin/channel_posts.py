"""Posting a message to a team's chat channel (the office's staff briefing in Slack): the
seam between the ``notify`` actions and the chat integrations (``Integration.channel_posters``,
by name: ``slack``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tocsin.errors import ConfigurationError

if TYPE_CHECKING:
    from tocsin.settings import SecretStore, Settings


class ChannelPoster(Protocol):
    name: str

    def post(self, channel: str, text: str) -> str:
        """Post ``text`` (plain text: nothing in it becomes a mention or a link) to
        ``channel``; returns where it went (``slack:C0123:1712.0001``). Raises a
        ``TocsinError`` when the post failed."""
        ...

    # A poster may also have ``post_with_command(channel, text, command) -> str``: ``text``,
    # then a command shown exactly as written, to be copied (the watchdog's findings).


ChannelPosterFactory = Callable[["Settings", "SecretStore"], ChannelPoster]


def channel_poster(name: str, settings: Settings, secrets: SecretStore) -> ChannelPoster:
    """The poster ``name`` of an installed integration (``Integration.channel_posters``)."""
    from tocsin.integration import offered

    posters: dict[str, ChannelPosterFactory] = offered("channel_posters")
    factory = posters.get(name)
    if factory is None:
        raise ConfigurationError(
            f"no installed integration posts to {name!r} channels",
            f"use one of: {', '.join(sorted(posters)) or 'none installed'}",
        )
    return factory(settings, secrets)


__all__ = ["ChannelPoster", "ChannelPosterFactory", "channel_poster"]
