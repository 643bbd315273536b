"""The overview (`/`): the state of the user base at a glance, from counters kept exact."""
