"""Uploading to the Hugging Face Hub: the token check, the repository id check, and `publish_folder`, which
adapters (`dpo_ext.hub.adapter_push`) and preference data (`dpo_ext.hub.datasets`) are both published through.

`publish_folder` checks the token first (so a missing or read-only token fails before any work), stages the exact
folder to upload in a temporary directory (the user's folder is only read), then creates the repository and
uploads the folder in one `upload_folder` commit. Transient HTTP failures (429, 5xx, dropped connections) are
retried with exponential backoff; the token is masked in every message we produce.

Flow with huggingface_hub 2.4 (checked against its source): `GET /api/whoami-v2` (ours), `POST /api/repos/create`,
`POST /api/validate-yaml` (the README card), `POST /api/{models,datasets}/{repo}/preupload/main`,
`POST /api/{models,datasets}/{repo}/commit/main`; the client may first fetch `GET /api/agent-harnesses` once per
process. With hf_xet installed, `upload_folder` retries preupload and commit itself (up to 5 times, 1-8 s apart)
and splits folders of more than 256 files into several commits; an adapter folder is far below that.
"""

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dpo_ext.hub.staged_folder import StagedFile
from dpo_ext.locations import HUB_ID_PATTERN, offline
from dpo_ext.safe_files import redact

logger = logging.getLogger(__name__)

_NO_TOKEN = "no Hugging Face token: run `hf auth login` or set HF_TOKEN"
_TOKENS_PAGE = "https://huggingface.co/settings/tokens"
_TRANSIENT_STATUSES = (408, 429, 500, 502, 503, 504)


class HubAccessError(PermissionError):
    """No token, a rejected token, or a token that cannot write to the target repository."""


class HubUploadError(RuntimeError):
    """The Hub refused the upload, or kept failing after the retries."""


@dataclass
class PushResult:
    """What was (or, for a dry run, would be) published."""

    repo_id: str
    files: list[StagedFile]
    commit_url: str | None = None  # None for a dry run
    staging_dir: Path | None = None  # the staged copy, kept for a dry run only

    def summary(self) -> str:
        width = max((len(f.path) for f in self.files), default=0)
        lines = [f"{f.path:<{width}}  {_human_size(f.size):>9}" for f in self.files]
        total = f"{len(self.files)} files, {_human_size(sum(f.size for f in self.files))}"
        where = self.commit_url or f"staged in {self.staging_dir} (dry run, nothing uploaded)"
        return "\n".join([*lines, total, where])


def check_hub_access(
    repo_id: str,
    token: str | None = None,
    *,
    endpoint: str | None = None,
    max_attempts: int = 4,
    retry_delay: float = 1.0,
) -> str:
    """Fail early, before training or staging, unless `token` can write to `repo_id`.

    Call it at the start of a recipe run with `--push_to_hub`, so that a missing token does not surface after hours
    of training.

    Args:
        repo_id (`str`): `namespace/name`, or `name` for the token owner's namespace.
        token (`str`, *optional*): defaults to `HF_TOKEN` or the token saved by `hf auth login`.
        endpoint (`str`, *optional*): Hub URL; defaults to `HF_ENDPOINT` or https://huggingface.co.
        max_attempts (`int`), retry_delay (`float`): retries of `whoami` on transient errors (delay doubles).

    Returns:
        `str`: the full repository id, `namespace/name`.

    Raises:
        `HubAccessError`: offline mode, no token, a rejected token, or no write access to the namespace.
    """
    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id)
    if offline():
        raise HubAccessError("HF_HUB_OFFLINE is set, so nothing can be pushed: unset it, or do a dry run")
    token = token or get_token()
    if not token:
        raise HubAccessError(_NO_TOKEN)
    api = HfApi(endpoint=endpoint)
    who = with_retries(lambda: api.whoami(token=token), repo_id=repo_id, action="check the token for",
                       secrets=[token], max_attempts=max_attempts, retry_delay=retry_delay)
    return _writable_repo_id(who, repo_id)


def _writable_repo_id(who: Mapping, repo_id: str) -> str:
    """The full id of `repo_id` (`namespace/name`) when the token that `whoami` described as `who` can write to
    it; a `HubAccessError` saying what is missing otherwise."""
    user = who.get("name", "")
    namespace, _, name = repo_id.rpartition("/")
    namespace = namespace or user
    access = (who.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    if role == "read":
        raise HubAccessError(f"token has no write access (it is a read token of {user!r}): create a write token at "
                             f"{_TOKENS_PAGE}, then run `hf auth login` or set HF_TOKEN")
    if role == "fineGrained" and not _fine_grained_can_write(access.get("fineGrained") or {}, namespace, repo_id):
        raise HubAccessError(f"token has no write access to {namespace}/{name} (fine-grained token without "
                             f"repo.write on {namespace!r}): add that permission at {_TOKENS_PAGE}")
    if namespace != user:
        org = next((o for o in who.get("orgs") or [] if o.get("name") == namespace), None)
        if org is None:
            raise HubAccessError(f"the token belongs to {user!r}, who is not a member of {namespace!r}: push to "
                                 f"{user}/{name}, or ask {namespace!r} for write access")
        if org.get("roleInOrg") == "read":
            raise HubAccessError(f"{user!r} has read-only access to {namespace!r}: ask an admin for write access")
    return f"{namespace}/{name}"


def _fine_grained_can_write(fine_grained: Mapping, namespace: str, repo_id: str) -> bool:
    # A fine-grained token lists, per entity (user, org or single repository), the permissions it grants.
    for scope in fine_grained.get("scoped") or []:
        entity = (scope.get("entity") or {}).get("name")
        if entity in (namespace, repo_id) and "repo.write" in (scope.get("permissions") or []):
            return True
    return False


def publish_folder(
    stage: Callable[..., list[StagedFile]],
    repo_id: str,
    *,
    repo_type: str,
    token: str | None,
    private: bool,
    dry_run: bool | str | Path,
    endpoint: str | None,
    commit_message: str,
    max_attempts: int,
    retry_delay: float,
) -> PushResult:
    """Check access, `stage(staging_dir, repo_id=..., secrets=...)`, then create the repository and upload the staged
    folder in one commit (a dry run only stages, into `dry_run`, and touches no network).

    `stage` writes into the new, empty `staging_dir` exactly what the repository `repo_id` (the full id, once
    access is checked) gets, keeping every string of `secrets` (the token) out of it, and returns
    `dpo_ext.hub.staged_folder.list_folder(staging_dir)`. The other arguments are those of `dpo_ext.push_adapter`.
    """
    from huggingface_hub import HfApi, get_token

    import dpo_ext

    check_repo_id(repo_id, repo_type)  # a dry run too: it promises what a real push would do
    if dry_run is not False and dry_run is not None:
        staging_dir = Path(tempfile.mkdtemp(prefix="dpo_ext_dry_run_")) if dry_run is True else Path(dry_run)
        # No get_token() here: it may exchange an OIDC token over the network. Saved tokens start with "hf_", which
        # `redact` masks anyway.
        secrets = [token, os.environ.get("HF_TOKEN")]
        files = stage(staging_dir, repo_id=repo_id, secrets=secrets)
        logger.info("Dry run: staged %d files for %s in %s", len(files), repo_id, staging_dir)
        return PushResult(repo_id, files, staging_dir=staging_dir.resolve())

    token = token or get_token()
    repo_id = check_hub_access(repo_id, token, endpoint=endpoint, max_attempts=max_attempts, retry_delay=retry_delay)
    with tempfile.TemporaryDirectory(prefix="dpo_ext_push_") as tmp:
        staging_dir = Path(tmp) / "upload"
        files = stage(staging_dir, repo_id=repo_id, secrets=[token])
        api = HfApi(endpoint=endpoint, token=token, library_name="dpo_ext", library_version=dpo_ext.__version__)

        def upload():
            api.create_repo(repo_id, repo_type=repo_type, private=private or None, exist_ok=True)
            return api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=staging_dir,
                                     commit_message=commit_message)

        commit = with_retries(upload, repo_id=repo_id, action="push to", secrets=[token], max_attempts=max_attempts,
                              retry_delay=retry_delay)
    logger.info("Pushed %d files to %s: %s", len(files), repo_id, commit.commit_url)
    return PushResult(repo_id, files, commit_url=commit.commit_url)


def check_repo_id(repo_id: str, repo_type: str = "model") -> None:
    """Refuse a repository id the Hub would refuse: `namespace/name` (or `name`), made of letters, digits, `-`, `_`
    and `.`, at most 96 characters, with no `--` or `..`, not starting or ending with `-` or `.`.

    Raises:
        `ValueError`: naming the id and what a valid one looks like.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    problem = None
    if not isinstance(repo_id, str) or not HUB_ID_PATTERN.match(repo_id) or not repo_id.isascii():
        problem = "only ASCII letters, digits, '-', '_' and '.' are allowed, with at most one '/'"
    else:
        try:
            validate_repo_id(repo_id)  # the Hub's remaining rules: length, '--', '..', leading or trailing '-'/'.'
        except HFValidationError as error:
            problem = " ".join(str(error).split())
    if problem:
        raise ValueError(f"repo id {repo_id!r} is not a valid Hub {repo_type} repository id ({problem}): use "
                         "namespace/name, e.g. 'alice/tiny-pl-dpo' (or just a name, for your own namespace)")


def with_retries(fn: Callable, *, repo_id: str, action: str, secrets: Sequence[str], max_attempts: int,
                 retry_delay: float):
    """Call `fn`, retrying transient Hub errors with exponential backoff; turn every failure into a
    `HubAccessError` or `HubUploadError` whose message names the repository and has the token masked."""
    for attempt in range(1, max_attempts + 1):
        try:
            return fn()
        except Exception as error:
            status, transient = _classify(error)
            detail = redact(_describe(error), secrets)
            if status == 401:
                raise HubAccessError(f"the Hugging Face token was rejected (invalid or expired) while trying to "
                                     f"{action} {repo_id}: create a new one at {_TOKENS_PAGE}") from None
            if status == 403:
                raise HubAccessError(f"token has no write access to {repo_id}: {detail}") from None
            if not transient:
                raise HubUploadError(f"could not {action} {repo_id}: {detail}") from None
            if attempt == max_attempts:
                raise HubUploadError(
                    f"could not {action} {repo_id}: the Hub still failed after {max_attempts} attempts, last with "
                    f"{detail}. Nothing local was changed; re-run the same command to retry.") from None
            delay = _retry_after(error) or retry_delay * 2 ** (attempt - 1)
            logger.warning("Hub request failed (%s); retrying in %.1f s (attempt %d of %d)", detail, delay,
                           attempt + 1, max_attempts)
            time.sleep(delay)


def _classify(error: Exception) -> tuple[int | None, bool]:
    """(HTTP status or None, whether retrying can help)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    # huggingface_hub's public alias of the HTTP library it uses (httpx2 in 2.x), kept stable across its releases:
    # its transport errors (dropped connection, timeout) are the ones worth retrying.
    from huggingface_hub.utils import httpx

    if isinstance(error, OfflineModeIsEnabled):
        return None, False
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return error.response.status_code, error.response.status_code in _TRANSIENT_STATUSES
    return None, isinstance(error, (httpx.TransportError, ConnectionError, TimeoutError))


def _describe(error: Exception) -> str:
    response = getattr(error, "response", None)
    message = (getattr(error, "server_message", None) or str(error)).strip()
    message = " ".join(message.split())[:300]  # one line, whatever the server sent
    if response is None:
        return f"{type(error).__name__}: {message}"
    try:
        where = f" on {response.request.method} {response.request.url.path}"
    except Exception:  # a response built without its request
        where = ""
    return f"HTTP {response.status_code}{where}: {message}"


def _retry_after(error: Exception) -> float | None:
    # 429 answers say how long to wait; honour it, within reason.
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    return min(float(value), 60.0) if value and value.isdigit() else None


def _human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
