"""Demo data for `flask demo [--users N]`: `generate` makes the records (no database), `load` stores
them (`seed_demo`), `cli` is the command. Nothing is imported here, so the CLI starts without Faker.
"""
