"""The frame of oncall-bot: Slack, the store, config and rendering. It knows no feature."""
