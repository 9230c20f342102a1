"""Model folders to and from the Hugging Face Hub; huggingface_hub does the transport (cache, revisions,
tokens from HF_TOKEN / `hf auth login`, HF_ENDPOINT, HF_HUB_OFFLINE). This module turns its failures
into one clear HubError."""
from __future__ import annotations

from pathlib import Path

from .export import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME

__all__ = ["HubError", "download_folder", "push_folder"]


class HubError(OSError):
    """The Hub could not give or take a model; the message says why and what to do."""


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
