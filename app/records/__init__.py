"""The writes every path shares (user records) and the counters kept in the same transaction."""
