"""The Slack app manifest, generated from the command registry: command names cannot drift."""

from __future__ import annotations

from typing import Any

from bot.command import Command

APP_NAME = "oncall-bot"
BOT_SCOPES = [
    "commands",            # the slash commands
    "chat:write",          # announcements, thread replies, chat.update of the announcement
    "chat:write.public",   # post in a public incident channel without being invited first
    "channels:join",       # join a public channel before uploading a file there
    "files:write",         # long output goes to the thread as a file
    "im:write",            # a long private answer goes to the asker as a file in a DM
    "usergroups:read",     # [access] rules that name user groups
    # Read back only when a post's outcome was unknown (a timeout, a dropped connection, a sender
    # killed mid-call): the bot looks for its own message, by its metadata, before posting again.
    "channels:history",    # ... in a public channel
    "groups:history",      # ... in a private channel
    "im:history",          # ... in the direct message a private answer from the App Home goes to
]
BOT_EVENTS = ["app_home_opened"]       # the App Home tab


def manifest(commands: dict[str, Command], http_url: str | None) -> dict[str, Any]:
    """For HTTP mode when `http_url` (the public URL of /slack/events) is given, else Socket Mode."""
    slash_commands = []
    for command in commands.values():
        entry = {"command": f"/{command.name}", "description": command.description,
                 "usage_hint": command.usage, "should_escape": command.mentions}
        if http_url:
            entry["url"] = http_url
        slash_commands.append(entry)
    interactivity: dict[str, Any] = {"is_enabled": True}
    events: dict[str, Any] = {"bot_events": BOT_EVENTS}
    if http_url:
        interactivity["request_url"] = http_url
        events["request_url"] = http_url
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": APP_NAME,
            "description": "The first stop when production throws 500s: incidents, deploys, probes, logs, MTTR.",
            "background_color": "#8b1a1a",
        },
        "features": {
            "bot_user": {"display_name": APP_NAME, "always_online": True},
            "app_home": {"home_tab_enabled": True, "messages_tab_enabled": True,
                         "messages_tab_read_only_enabled": True},
            "slash_commands": slash_commands,
        },
        "oauth_config": {"scopes": {"bot": BOT_SCOPES}},
        "settings": {
            "interactivity": interactivity,
            "event_subscriptions": events,
            "org_deploy_enabled": False,
            "socket_mode_enabled": http_url is None,
            "token_rotation_enabled": False,
        },
    }
