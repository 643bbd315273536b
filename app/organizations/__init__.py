"""Organizations: placeholder until built."""
