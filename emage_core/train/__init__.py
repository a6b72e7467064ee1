"""Training: datasets in the BEAT2 layouts (`data`), learned labels, EMAGE's two-stage training (`emage`)."""
