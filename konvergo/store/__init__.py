"""The store: Django models, one row per thing a user can see."""
