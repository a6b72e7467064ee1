"""Model families: each family's networks, config and checkpoint loading (`from_pretrained`), under its own folder."""
