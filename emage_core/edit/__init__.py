"""Edits of motion: locked parts kept from a reference (`locks`), explicit expressive controls (`style`)."""
