"""Publish this checkout as a Hugging Face Space, in one command.

    python scripts/publish_space.py --repo-id OWNER/NAME --dry-run   # list what would go up, touch nothing
    python scripts/publish_space.py --repo-id OWNER/NAME             # create the Space if needed, upload

Why not ``git push``: the Hub refuses plain git pushes of files over 10 MB without Git LFS, and the
bundled checkpoint is larger; ``huggingface_hub``'s ``upload_folder`` uploads large files through the
Hub's LFS storage itself. What goes up: the files git tracks, except those only developers need
(tests, benchmarks, CI). The Space then installs ``requirements.txt`` and the Debian packages of
``packages.txt`` and starts ``app.py`` as README.md's front matter says. The token comes from
``HF_TOKEN`` or ``hf auth login``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Tracked paths a Space does not need (prefixes).
DEVELOPER_ONLY = ("tests/", "bench/", ".ci/", ".gitignore")
#: The Hub stores files above this size through LFS; upload_folder does that on its own.
LFS_THRESHOLD = 10 * 1024 * 1024


def space_files(root: Path = REPO) -> list[str]:
    """Repository-relative paths of the files that make up the Space, sorted."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    tracked = [p for p in out.stdout.decode().split("\0") if p]
    return sorted(p for p in tracked if not p.startswith(DEVELOPER_ONLY) and (root / p).is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo-id", required=True, help="the Space, OWNER/NAME")
    ap.add_argument("--dry-run", action="store_true", help="list the files and sizes; upload nothing")
    ap.add_argument("--private", action="store_true", help="create the Space as private (when it does not exist)")
    ap.add_argument("--message", default="Publish EMAGE Studio", help="commit message on the Hub")
    args = ap.parse_args(argv)

    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(args.repo_id)
    except HFValidationError as err:
        print(f"publish_space: --repo-id {args.repo_id!r} is not a valid repo id: {err}", file=sys.stderr)
        return 2
    files = space_files()
    total = 0
    for path in files:
        size = (REPO / path).stat().st_size
        total += size
        note = "  (large: uploaded through LFS)" if size > LFS_THRESHOLD else ""
        print(f"{size:>12,}  {path}{note}")
    print(f"{len(files)} files, {total / 1e6:.1f} MB -> https://huggingface.co/spaces/{args.repo_id}")
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0

    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.repo_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
    info = api.upload_folder(repo_id=args.repo_id, repo_type="space", folder_path=REPO, allow_patterns=files,
                             commit_message=args.message)
    print(f"uploaded: {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
