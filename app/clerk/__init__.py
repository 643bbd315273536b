"""Clerk: turning its users into ours (webhooks, replays, backfill) and the client for its API."""
