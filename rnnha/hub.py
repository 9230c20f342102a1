"""Model folders to and from the Hugging Face Hub; huggingface_hub does the transport (cache, revisions,
tokens from HF_TOKEN / `hf auth login`, HF_ENDPOINT, HF_HUB_OFFLINE). This module turns its failures
into one clear HubError."""
from __future__ import annotations

from pathlib import Path

from .pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME

__all__ = ["HubError", "parse_repo", "download_folder", "push_folder", "push_space"]

HUB_PREFIX = "hf-hub:"


class HubError(OSError):
    """The Hub could not give or take a model; the message says why and what to do."""


def parse_repo(text: str) -> tuple[str, str | None] | None:
    """`ORG/NAME`, `hf-hub:ORG/NAME` or either with `@REVISION` -> (repo id, revision or None); None
    when the part before `@` is not a valid Hub model repo id (huggingface_hub's own check)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo, _, revision = text.removeprefix(HUB_PREFIX).partition("@")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return (repo, revision or None) if repo.count("/") == 1 else None


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def download_folder(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
                    token: str | bool | None = None) -> Path:
    """Download (or find in the cache) a model folder; returns its local snapshot path."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}@{revision or 'main'}"
    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                 allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
    except GatedRepoError as exc:
        raise HubError(f"{where} is gated: accept its terms on the Hub and log in (`hf auth login` or HF_TOKEN)") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"no model repository {repo_id!r} on {_endpoint()} (if it is private, log in with "
                       "`hf auth login` or set HF_TOKEN)") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{repo_id!r} has no revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        mode = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else \
            f"the Hub at {_endpoint()} could not be reached"
        raise HubError(f"cannot get {where}: {mode} and it is not in the cache "
                       f"({cache_dir or constants.HF_HUB_CACHE}); connect to the internet once, or use a "
                       "local model folder") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise HubError(f"downloading {where} from {_endpoint()} failed: {exc}") from exc
    folder = Path(path)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
    if missing:
        raise HubError(f"{where} is not an RNN-HA model repository: it has no {' or '.join(missing)}")
    return folder


def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload RNN-HA model") -> str:
    """Create the repo if needed and upload config.json, model.safetensors and README.md; returns the
    commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
    if missing:
        raise HubError(f"{folder} has no {' or '.join(missing)}: export a model folder first")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                 allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
                                 commit_message=commit_message)
    except (HfHubHTTPError, OSError) as exc:
        raise HubError(f"pushing {folder} to {repo_id} on {_endpoint()} failed: {exc}; "
                       "check your token (`hf auth login` or HF_TOKEN) and network") from exc
    return info.commit_url


def _tracked_files(root: Path) -> list[str] | None:
    """The files git tracks under root (what a `git push` sends), or None if root is no git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


SPACE_IGNORE = [".git/*", "runs/*", "*/__pycache__/*", "__pycache__/*", "*.pyc", "*.egg-info/*", ".pytest_cache/*",
                ".venv/*", "build/*", "dist/*", ".cache/*", ".whl/*", ".gl/*"]


def push_space(repo_id: str, root: str | Path | None = None, token: str | None = None, private: bool = False,
               revision: str | None = None, commit_message: str = "Deploy the RNN-HA app") -> str:
    """Create the Gradio Space if needed and upload the project to it through the Hub's API, which
    stores large files (the 23 MB default weights) itself, where a plain `git push` is refused. Uploads
    the files git tracks under root (the repository by default), else root less SPACE_IGNORE.
    Returns the commit URL."""
    import re

    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    readme = root / "README.md"
    front = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not (root / "app.py").is_file():
        raise HubError(f"{root} has no app.py: point --root at the project's checkout")
    if not re.match(r"---\n.*?^sdk:\s*gradio\s*$.*?\n---\n", front, flags=re.S | re.M):
        raise HubError(f"{readme.name} in {root} has no Space front matter (a '---' block with 'sdk: gradio')")
    api = HfApi(token=token)
    files = _tracked_files(root)
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        if files is None:
            info = api.upload_folder(folder_path=str(root), repo_id=repo_id, repo_type="space", revision=revision,
                                     ignore_patterns=SPACE_IGNORE, commit_message=commit_message)
        else:
            operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(root / name)) for name in files]
            info = api.create_commit(repo_id, operations, repo_type="space", revision=revision,
                                     commit_message=commit_message)
    except (HfHubHTTPError, OSError) as exc:
        raise HubError(f"deploying {root} to the Space {repo_id} on {_endpoint()} failed: {exc}; "
                       "check your token (`hf auth login` or HF_TOKEN) and network") from exc
    return info.commit_url


def main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m rnnha.hub", description="Move RNN-HA folders to the Hub.")
    commands = parser.add_subparsers(dest="command", required=True)
    space = commands.add_parser("push-space", help="deploy the app to a Hugging Face Space (created if needed)")
    space.add_argument("repo_id", help="ORG/NAME of the Space")
    space.add_argument("--root", help="the project's checkout (default: this one)")
    space.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(push_space(args.repo_id, args.root, private=args.private))
    except HubError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the server said
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
