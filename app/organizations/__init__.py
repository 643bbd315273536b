"""Organizations, their memberships and invitations: the pages (views.py, its blueprint, registered
by the factory), what they read (queries.py) and parse (forms.py), and the operations (services.py)."""
