"""The Gradio interface of EMAGE Studio. Only interface code lives here; the work is in `emage_core`."""
