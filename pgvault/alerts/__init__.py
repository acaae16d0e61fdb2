"""Alert delivery for the alert worker (pgvault.consumers.alert).

message.py   the channel-neutral Notification (title, summary, fields) and the digest
channels.py  the Channel interface, ChannelError, secret redaction, building from config
discord.py   Discord webhook (JSON POST)
mail.py      SMTP e-mail (STARTTLS, AUTH)
state.py     the shared SQLite dedupe / rate-limit / per-channel delivery state
"""
