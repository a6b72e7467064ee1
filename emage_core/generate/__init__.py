"""Speech -> `Motion` clips: the generator interface, its settings, model references and each family's generator."""
