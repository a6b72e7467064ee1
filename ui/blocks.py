"""The page. Until the generator lands it offers one real tool: inspect a speech or motion file."""
from __future__ import annotations

import gradio as gr

from emage_core import __version__


def describe_file(path: str | None) -> str:
    """Markdown describing an uploaded speech or BEAT2 motion file, or a clear error."""
    if not path:
        return "Upload a speech file (wav, mp3, flac, ogg, m4a) or a BEAT2 motion `.npz`."
    with open(path, "rb") as fh:
        is_npz = fh.read(4) == b"PK\x03\x04"
    try:
        if is_npz:
            from emage_core.beat2 import read_beat2

            m = read_beat2(path)
            return f"**Motion**: {m.n_frames} frames at {m.fps:g} fps ({m.duration:.2f} s)"
        from emage_core.audio import probe_audio

        info = probe_audio(path)
        return (f"**Speech**: {info.format}, {info.sample_rate} Hz, {info.channels} channel(s), "
                f"{info.duration:.2f} s")
    except ValueError as e:  # our file errors are ValueErrors with a message for people
        return f"**Cannot use this file**: {e}"


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="EMAGE Studio") as demo:
        gr.Markdown(
            f"# EMAGE Studio <small>v{__version__}</small>\n"
            "Speech in, holistic 3D co-speech motion out (face, body, hands, global movement; SMPL-X + FLAME).\n\n"
            "Generation is being built; for now this page checks the files you will give it."
        )
        upload = gr.File(label="Speech or motion file", type="filepath")
        report = gr.Markdown(describe_file(None))
        upload.change(describe_file, inputs=upload, outputs=report, api_name="describe")
    return demo
