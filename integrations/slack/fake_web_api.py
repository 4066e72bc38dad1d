"""The Web API methods of the fake Slack (``chat.postMessage``, ``conversations.*``,
``users.*``...), each a ``@slack_method`` of ``SlackWebApiMethods``, which ``FakeSlack``
(``fake``) inherits; the fake's ``handle`` checks the token, its scopes and the rate limit
before one runs, with the fake's lock for its state.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from tocsin.integrations.slack.fake_workspace import (
    _BOT_USER,
    _CHANNEL_NAME,
    _CHANNEL_NAME_MAX_LENGTH,
    _USER_ID,
    BOT_ID,
    BOT_USER_ID,
    TEAM_ID,
    PostedEphemeral,
    PostedSlackMessage,
    SlackCall,
    SlackChannel,
    SlackError,
    SlackUser,
    slack_method,
)


class SlackWebApiMethods:
    """The methods ``FakeSlack`` answers; its state is set by ``FakeSlack._restore``."""

    lock: threading.RLock
    tokens: dict[str, frozenset[str]]
    channels: dict[str, SlackChannel]
    usergroups: dict[str, list[str]]
    users: dict[str, SlackUser] | None
    _messages: list[PostedSlackMessage]
    _ephemerals: list[PostedEphemeral]
    _created_channels: int
    _next_ts: int

    def user(self, user_id: str) -> SlackUser:
        """The user with that id (made up when there is no directory); ``KeyError`` when unknown."""
        if user_id == BOT_USER_ID:
            return _BOT_USER
        with self.lock:
            if self.users is not None:
                return self.users[user_id]
        if not _USER_ID.match(user_id):
            raise KeyError(f"no user {user_id}")
        name = user_id.lower()
        return SlackUser(user_id, name, f"Sandbox user {user_id}", f"{name}@sandbox.example.com")

    def _channel(self, reference: Any) -> SlackChannel:
        """The channel named by an id, ``#name`` or ``name``; ``channel_not_found`` otherwise."""
        text = str(reference or "")
        with self.lock:
            if text in self.channels:
                return self.channels[text]
            for channel in self.channels.values():
                if channel.name == text.removeprefix("#"):
                    return channel
        raise SlackError("channel_not_found")

    def _new_ts(self) -> str:
        with self.lock:
            counter = self._next_ts
            self._next_ts += 100
        seconds, micros = divmod(counter, 1_000_000)
        return f"{1_700_000_000 + seconds}.{micros:06d}"

    @slack_method("usergroups.users.list", scope="usergroups:read")
    def usergroups_users_list(self, call: SlackCall) -> dict[str, Any]:
        group = str(call.args.get("usergroup") or "")
        with self.lock:
            if group not in self.usergroups:
                raise SlackError("no_such_subteam")
            return {"users": list(self.usergroups[group])}

    @slack_method("chat.postMessage", scope="chat:write")
    def chat_post_message(self, call: SlackCall) -> dict[str, Any]:
        channel = self._channel(call.args.get("channel"))
        if not channel.bot_is_member:
            raise SlackError("not_in_channel")
        text, blocks = _message_content(call.args)
        thread_ts = call.args.get("thread_ts") or None
        posted = PostedSlackMessage(
            channel=channel.id,
            ts=self._new_ts(),
            text=text,
            blocks=blocks,
            thread_ts=None if thread_ts is None else str(thread_ts),
        )
        with self.lock:
            self._messages.append(posted)
        return {"channel": channel.id, "ts": posted.ts, "message": _message_object(posted)}

    @slack_method("chat.update", scope="chat:write")
    def chat_update(self, call: SlackCall) -> dict[str, Any]:
        channel = self._channel(call.args.get("channel"))
        ts = str(call.args.get("ts") or "")
        with self.lock:
            index = next(
                (
                    i
                    for i, posted in enumerate(self._messages)
                    if posted.channel == channel.id and posted.ts == ts
                ),
                None,
            )
            if index is None:
                raise SlackError("message_not_found")
            text, blocks = _message_content(call.args)
            updated = dataclasses.replace(
                self._messages[index],
                text=text,
                blocks=blocks,
                edits=self._messages[index].edits + 1,
            )
            self._messages[index] = updated
        return {
            "channel": channel.id,
            "ts": updated.ts,
            "text": updated.text or "",
            "message": _message_object(updated),
        }

    @slack_method("chat.postEphemeral", scope="chat:write")
    def chat_post_ephemeral(self, call: SlackCall) -> dict[str, Any]:
        channel = self._channel(call.args.get("channel"))
        user = str(call.args.get("user") or "")
        if not self._is_member(channel, user):
            raise SlackError("user_not_in_channel")
        text, blocks = _message_content(call.args)
        thread_ts = call.args.get("thread_ts") or None
        posted = PostedEphemeral(
            channel=channel.id,
            user=user,
            text=text,
            blocks=blocks,
            message_ts=self._new_ts(),
            thread_ts=None if thread_ts is None else str(thread_ts),
        )
        with self.lock:
            self._ephemerals.append(posted)
        return {"message_ts": posted.message_ts}

    def _is_member(self, channel: SlackChannel, user_id: str) -> bool:
        try:
            self.user(user_id)
        except KeyError:
            return False
        return channel.members is None or user_id in channel.members

    @slack_method("conversations.create", scope="channels:manage")
    def conversations_create(self, call: SlackCall) -> dict[str, Any]:
        name = str(call.args.get("name") or "")
        if not name:
            raise SlackError("invalid_name_required")
        if len(name) > _CHANNEL_NAME_MAX_LENGTH:
            raise SlackError("invalid_name_maxlength")
        if not _CHANNEL_NAME.match(name):
            raise SlackError("invalid_name_specials")
        if not name.strip("-_"):
            raise SlackError("invalid_name_punctuation")
        with self.lock:
            if any(channel.name == name for channel in self.channels.values()):
                raise SlackError("name_taken")
            channel_id = self._new_channel_id()
            channel = SlackChannel(
                id=channel_id,
                name=name,
                bot_is_member=True,
                members=frozenset({BOT_USER_ID}),
                is_private=_flag(call.args.get("is_private")),
                created=int(time.time()),
                creator=BOT_USER_ID,
            )
            self.channels[channel_id] = channel
        return {"channel": _conversation_object(channel)}

    def _new_channel_id(self) -> str:
        with self.lock:
            while True:
                self._created_channels += 1
                channel_id = f"C1{self._created_channels:09d}"
                if channel_id not in self.channels:
                    return channel_id

    @slack_method("conversations.invite", scope="channels:manage")
    def conversations_invite(self, call: SlackCall) -> dict[str, Any]:
        with self.lock:  # read, check and replace the channel as one step
            channel = self._channel(call.args.get("channel"))
            user_ids = _id_list(call.args.get("users"))
            if not user_ids:
                raise SlackError("no_user")
            if not channel.bot_is_member:
                raise SlackError("not_in_channel")
            if BOT_USER_ID in user_ids:
                raise SlackError("cant_invite_self")
            for user_id in user_ids:
                try:
                    self.user(user_id)
                except KeyError:
                    raise SlackError("user_not_found") from None
            if channel.members is None or set(user_ids) <= channel.members:
                raise SlackError("already_in_channel")
            channel = dataclasses.replace(channel, members=channel.members | set(user_ids))
            self.channels[channel.id] = channel
        return {"channel": _conversation_object(channel)}

    @slack_method("conversations.open", scope="im:write")
    def conversations_open(self, call: SlackCall) -> dict[str, Any]:
        """A direct message with one person (group DMs are not faked): Slack answers the same
        ``D`` channel each time, with ``already_open`` once it exists."""
        users = [u.strip() for u in str(call.args.get("users") or "").split(",") if u.strip()]
        if call.args.get("channel"):
            return {"channel": {"id": self._channel(call.args["channel"]).id}}
        if len(users) != 1:
            raise SlackError("users_list_not_supplied" if not users else "not_supported")
        try:
            person = self.user(users[0])
        except KeyError:
            raise SlackError("user_not_found") from None
        if person.id == BOT_USER_ID:
            raise SlackError("cannot_dm_bot")
        channel_id = "D" + person.id[1:]
        with self.lock:
            already = channel_id in self.channels
            if not already:
                self.channels[channel_id] = SlackChannel(
                    id=channel_id,
                    name=channel_id,
                    members=frozenset({person.id, BOT_USER_ID}),
                    is_private=True,
                )
        answer: dict[str, Any] = {"channel": {"id": channel_id}}
        if already:
            answer.update(no_op=True, already_open=True)
        return answer

    @slack_method("auth.test", scope="")  # Slack asks no scope of auth.test
    def auth_test(self, call: SlackCall) -> dict[str, Any]:
        return {
            "url": "https://sandbox.slack.example/",
            "team": "Sandbox",
            "user": _BOT_USER.name,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        }

    @slack_method("conversations.history", scope="channels:history")
    def conversations_history(self, call: SlackCall) -> dict[str, Any]:
        """A channel's messages, newest first, without thread replies; paged by ``cursor``."""
        channel = self._channel(call.args.get("channel"))
        with self.lock:
            found = [
                m for m in self._messages if m.channel == channel.id and m.thread_ts in (None, m.ts)
            ]
        return _page(list(reversed(found)), call.args)

    @slack_method("conversations.replies", scope="channels:history")
    def conversations_replies(self, call: SlackCall) -> dict[str, Any]:
        """A thread: its parent message, then the replies, oldest first; paged by ``cursor``."""
        channel = self._channel(call.args.get("channel"))
        ts = str(call.args.get("ts") or "")
        with self.lock:
            found = [
                m
                for m in self._messages
                if m.channel == channel.id and (m.ts == ts or m.thread_ts == ts)
            ]
        if not any(m.ts == ts for m in found):
            raise SlackError("thread_not_found")
        return _page(found, call.args)

    @slack_method("users.info", scope="users:read")
    def users_info(self, call: SlackCall) -> dict[str, Any]:
        try:
            user = self.user(str(call.args.get("user") or ""))
        except KeyError:
            raise SlackError("user_not_found") from None
        profile: dict[str, Any] = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.name,
            "display_name_normalized": user.name,
        }
        with self.lock:
            may_read_email = "users:read.email" in self.tokens.get(call.token, frozenset())
        if may_read_email and user.email:
            profile["email"] = user.email
        is_bot = user.id == BOT_USER_ID
        if is_bot:
            profile["bot_id"] = BOT_ID
        return {
            "user": {
                "id": user.id,
                "team_id": TEAM_ID,
                "name": user.name,
                "deleted": False,
                "real_name": user.real_name,
                "tz": user.tz,
                "is_admin": False,
                "is_owner": False,
                "is_bot": is_bot,
                "is_app_user": False,
                "profile": profile,
            }
        }

    @slack_method("users.lookupByEmail", scope="users:read.email")
    def users_lookup_by_email(self, call: SlackCall) -> dict[str, Any]:
        email = str(call.args.get("email") or "").strip().lower()
        with self.lock:
            directory = None if self.users is None else list(self.users.values())
        if directory is not None:
            found = next((u for u in directory if u.email.lower() == email), None)
        else:  # made-up users: u0abc@sandbox.example.com is U0ABC
            local, _, domain = email.partition("@")
            found = (
                self.user(local.upper())
                if domain == "sandbox.example.com" and _USER_ID.match(local.upper())
                else None
            )
        if found is None or not email:
            raise SlackError("users_not_found")
        return {
            "user": {
                "id": found.id,
                "team_id": TEAM_ID,
                "name": found.name,
                "deleted": False,
                "real_name": found.real_name,
                "is_bot": False,
                "profile": {"real_name": found.real_name, "email": found.email},
            }
        }


def _page(messages: list[PostedSlackMessage], args: Mapping[str, Any]) -> dict[str, Any]:
    """One page of ``messages`` as conversations.* answer it (cursor: where the next starts)."""
    try:
        start = int(str(args.get("cursor") or "0").removeprefix("next:"))
        limit = max(1, min(1000, int(args.get("limit") or 100)))
    except ValueError:
        raise SlackError("invalid_cursor") from None
    page = messages[start : start + limit]
    more = start + limit < len(messages)
    return {
        "messages": [_message_object(m) for m in page],
        "has_more": more,
        "response_metadata": {"next_cursor": f"next:{start + limit}" if more else ""},
    }


def _message_content(args: Mapping[str, Any]) -> tuple[str | None, list[Any] | None]:
    """The text and blocks of a chat.* call; ``invalid_blocks`` or ``no_text`` when unusable."""
    text = args.get("text")
    blocks = args.get("blocks")
    if isinstance(blocks, str):  # form-encoded bodies carry blocks as a JSON string
        try:
            blocks = json.loads(blocks)
        except ValueError:
            raise SlackError("invalid_blocks") from None
    if blocks is not None and not isinstance(blocks, list):
        raise SlackError("invalid_blocks")
    if not text and not blocks:
        raise SlackError("no_text")
    return (None if text is None else str(text)), copy.deepcopy(blocks)


def _message_object(posted: PostedSlackMessage) -> dict[str, Any]:
    """The message as Slack describes it in chat.* answers and interaction payloads."""
    message: dict[str, Any] = {
        "type": "message",
        "text": posted.text or "",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "ts": posted.ts,
    }
    if posted.blocks is not None:
        message["blocks"] = copy.deepcopy(posted.blocks)
    if posted.thread_ts is not None:
        message["thread_ts"] = posted.thread_ts
    return message


def _conversation_object(channel: SlackChannel) -> dict[str, Any]:
    """A channel as the conversations.* methods describe it."""
    conversation: dict[str, Any] = {
        "id": channel.id,
        "name": channel.name,
        "is_channel": True,
        "is_group": False,
        "is_im": False,
        "is_mpim": False,
        "is_private": channel.is_private,
        "created": channel.created,
        "creator": channel.creator,
        "is_archived": False,
        "is_general": channel.name == "general",
        "unlinked": 0,
        "name_normalized": channel.name,
        "is_shared": False,
        "is_ext_shared": False,
        "is_org_shared": False,
        "pending_shared": [],
        "is_pending_ext_shared": False,
        "is_member": channel.bot_is_member,
        "topic": {"value": "", "creator": "", "last_set": 0},
        "purpose": {"value": "", "creator": "", "last_set": 0},
        "previous_names": [],
    }
    if channel.members is not None:
        conversation["num_members"] = len(channel.members)
    return conversation


def _flag(value: Any) -> bool:
    """A boolean argument: JSON true, or "true"/"1" in a form or query."""
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in {"true", "1"}


def _id_list(value: Any) -> list[str]:
    """A list of ids given comma-separated (form) or as a JSON array."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]
