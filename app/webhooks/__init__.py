"""Clerk webhooks: the signed receiver, the exactly-once store, and the deliveries page."""
