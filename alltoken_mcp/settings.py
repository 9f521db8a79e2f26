"""Environment (and CLI overrides) → one validated, immutable `Settings` object.

Built once in `main()`. Nothing here reads the environment at import time. A bad value raises
`SettingsError` with one line naming the variable and what it accepts; the CLI prints that line
and exits with status 2. A missing API key is not an error: the server starts and the calls that
need the key explain how to set it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

DEFAULT_BASE_URL = "https://api.alltoken.ai/v1"
DEFAULT_MAX_WAIT_SECONDS = 45.0
# Codex gives up on a tool call at 60 s; an in-call wait above this would always be cut off.
MAX_ALLOWED_WAIT_SECONDS = 600.0
DEFAULT_CHAT_MODEL = "deepseek-v4-pro"
DEFAULT_IMAGE_MODEL = "gpt-image-2"
DEFAULT_VIDEO_MODEL = "seedance-1.5-pro"
BUDGET_VAR = "ALLTOKEN_DAILY_BUDGET_USD"
CONFIRM_VAR = "ALLTOKEN_CONFIRM"
ConfirmMode = Literal["never", "video", "media"]
CONFIRM_MODES: tuple[ConfirmMode, ...] = ("never", "video", "media")
"""never: no question; video: ask before each video render; media: before each image or video job."""

API_KEY_VAR = "ALLTOKEN_API_KEY"
MCP_TOKEN_VAR = "ALLTOKEN_MCP_TOKEN"
TOKENS_FILE_VAR = "ALLTOKEN_MCP_TOKENS_FILE"
INTROSPECTION_URL_VAR = "ALLTOKEN_MCP_INTROSPECTION_URL"
DATABASE_URL_VAR = "ALLTOKEN_MCP_DATABASE_URL"
DATABASE_URL_EXAMPLE = "postgresql://alltoken:PASSWORD@db.example:5432/alltoken"
MEDIA_SECRET_VAR = "ALLTOKEN_MCP_MEDIA_SECRET"
PUBLIC_URL_VAR = "ALLTOKEN_MCP_PUBLIC_URL"
MIN_MEDIA_SECRET_CHARS = 32
KEYS_PAGE = "https://alltoken.ai → Settings → API Keys"
KEY_HOWTO = (
    f"Set {API_KEY_VAR} in this MCP server's environment: the `env` block of the host config "
    "(.mcp.json, Claude Desktop, Cursor) or [mcp_servers.alltoken.env] in Codex's config.toml; hosts do "
    f"not pass shell variables to MCP servers. Keys are at {KEYS_PAGE}."
)
"""Where the key goes. Said by every message about a missing, unusable or rejected key."""


class SettingsError(ValueError):
    """A configuration value is invalid; the message is one line naming the variable."""


@dataclass(frozen=True)
class KeyProblem:
    """Why the server has no usable API key: what was found, and the fix.

    The one answer to "what is wrong with the key": tool calls that need the key fail with `str()` of it
    (through `MissingAPIKeyError`), and `doctor` shows `found` as its ✗ line and `fix` as the fix. Built
    by `key_problem`; never contains the configured value unless that value is plainly not a key.
    """

    found: str
    fix: str

    def __str__(self) -> str:
        return f"No usable AllToken API key: {self.found}. {self.fix[:1].upper()}{self.fix[1:]}."


KEY_NOT_SET = KeyProblem(
    f"{API_KEY_VAR} is not set",
    f"{KEY_HOWTO[:1].lower()}{KEY_HOWTO[1:].rstrip('.')}",
)

_REFERENCE = re.compile(
    r".*\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}.*"  # ${NAME}, ${NAME:-default}, also inside text
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"  # $NAME
    r"|%(?P<win>[A-Za-z_][A-Za-z0-9_]*)%",  # %NAME%
    re.DOTALL,
)
_PLACEHOLDER = re.compile(
    r"<[^<>]*>"  # <your key>, <ALLTOKEN_API_KEY>
    r"|(?:sk-)?(?:x+|\*+|•+)"  # sk-xxxx, ****
    r"|.*(?:\.\.\.|…).*"  # sk-..., sk-…
    # A whole word between separators, so that a random key cannot match by chance.
    r"|(?:.*[-_ ])?(?:your|paste|insert|replace|enter)(?:[-_ ].*)?"  # paste-your-key-here, YOUR_API_KEY
    r"|changeme|change-me|placeholder|todo|none|null|undefined|api[-_ ]?key|key|token|secret",
    re.IGNORECASE,
)
_QUOTES = "\"'`“”‘’"
_SHOWN_CHARS = 40


def key_problem(raw: str | None) -> KeyProblem | None:
    """What is wrong with `raw` as an API key (the environment's value), or None when it can be used.

    Surrounding whitespace is ignored: keys never contain any, and a pasted line break or a trailing space
    in a JSON string is invisible to the user. Quotes are refused: they were typed, and say the config was
    written wrongly (a shell or .env line copied into JSON, a string quoted twice); the message names that
    and its fix rather than hiding it. The value is quoted back only when it is plainly not a key (a
    variable reference, a placeholder), and then at most 40 characters of it.
    """
    value = (raw or "").strip()
    if not value:
        return KEY_NOT_SET if raw is None else KeyProblem(f"{API_KEY_VAR} is set but empty", KEY_NOT_SET.fix)
    reference = _REFERENCE.fullmatch(value)
    if reference is not None:
        return _unexpanded(value, reference)
    if value[0] in _QUOTES or value[-1] in _QUOTES:
        return KeyProblem(
            f"{API_KEY_VAR} is wrapped in quotes, which became part of the value (keys contain no quotes)",
            f'remove the quotes around the key in the config: in JSON "{API_KEY_VAR}": "sk-…", in TOML '
            f'{API_KEY_VAR} = "sk-…", in a shell export {API_KEY_VAR}=sk-…',
        )
    if _PLACEHOLDER.fullmatch(value):
        return KeyProblem(
            f"{API_KEY_VAR} is the placeholder text {_shown(value)!r}, not a key",
            f"replace it with your key from {KEYS_PAGE}",
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        return KeyProblem(
            f"{API_KEY_VAR} contains whitespace or control characters inside it, so it is not one key "
            "(a line break, or more than the key was pasted)",
            f"put the key alone in {API_KEY_VAR}, copied again from {KEYS_PAGE}",
        )
    return None


def _shown(value: str) -> str:
    """`value` fit for a one-line message: at most 40 characters, control characters as `?`."""
    value = "".join(c if c.isprintable() else "?" for c in value)
    return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"


def _unexpanded(value: str, reference: re.Match[str]) -> KeyProblem:
    name = reference["braced"] or reference["bare"] or reference["win"]
    found = f"{API_KEY_VAR} is the literal text {_shown(value)}"
    if reference["braced"]:
        found += (
            f": Claude Code passes that when {name} is not set in the shell it was started from (it expands "
            "${…} in .mcp.json from its own environment)"
        )
        fix = f"export {name} before starting claude, or put the key itself in the config"
    elif reference["win"]:
        found += f": a Windows variable reference that nothing expanded ({name} is not set, or the host "
        found += "does not expand %…%)"
        fix = f"set {name} before starting the host, or put the key itself in the config"
    else:
        found += ": a shell variable reference, but hosts start MCP servers without a shell to expand it"
        fix = (
            "put the key itself in the config, or reference the variable the way your host expands it "
            f"(${{{name}}} in Claude Code's .mcp.json, env_vars in Codex's config.toml)"
        )
    return KeyProblem(found, fix)


def key_fingerprint(api_key: str) -> str:
    """12 hex digits that tell keys apart without revealing anything about them (a salted SHA-256)."""
    return hashlib.sha256(f"alltoken-mcp upstream key:{api_key}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Upstream:
    """The AllToken a job belongs to: where its task lives and which key can see it.

    A job is advanced, cancelled or failed only by a server configured for the same upstream: another
    base URL (the simulator) or another key (another account) would be told "no such task" and fail it.
    """

    base_url: str
    """The base URL, or for `--simulate` the name of the in-process simulator (its port changes per run)."""
    key_fingerprint: str | None
    """`key_fingerprint(api_key)`; None for a server without a key (it creates and polls nothing)."""


def missing_v1_hint(base_url: str) -> str | None:
    """The hint for a 404 from a base URL whose path does not end in /v1 (AllToken's API lives there)."""
    parts = urlsplit(base_url)
    if parts.path.rstrip("/").endswith("/v1"):
        return None
    suggested = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/v1"
    return (
        f"ALLTOKEN_BASE_URL is {base_url}, without /v1: AllToken's API is under /v1, so set "
        f"ALLTOKEN_BASE_URL={suggested}"
    )


@dataclass(frozen=True)
class DownloadLimits:
    """How big and how slow a result download may be, and how often a failed one is tried again.

    Not read from the environment: the defaults are the product's rules (README, "Cost and safety");
    tests shrink them to exercise the limits quickly.
    """

    max_image_bytes: int = 200 * 1024 * 1024
    max_video_bytes: int = 2 * 1024 * 1024 * 1024
    max_frame_bytes: int = 50 * 1024 * 1024
    min_bytes_per_second: int = 32 * 1024
    """A download must bring at least this × `window_seconds` in every window (the first one starts with
    the request), or it is abandoned as stalled: a trickle ends after one window (20 s), and an attempt at
    a file of up to N bytes ends within `window_seconds` + N / this (the overall deadline; about 18 h for
    a 2 GiB video, 1.8 h for a 200 MiB image). 32 KiB/s is slower than any useful link."""
    window_seconds: float = 20.0
    max_attempts: int = 5
    """Attempts at a download that fails transiently (connection lost, 5xx, stalled) before the job fails.
    Permanent failures (refused URL, 4xx, over the size cap, not the claimed type) are not retried."""
    retry_delay_seconds: float = 2.0
    """Wait before the second attempt; doubled before each later one (2, 4, 8, 16 s)."""


@dataclass(frozen=True)
class Settings:
    api_key: str | None = field(repr=False)
    """A usable key, or None (see `key_problem` for why)."""
    base_url: str
    home: Path
    output_dir: Path
    max_wait_seconds: float
    default_chat_model: str
    default_image_model: str
    default_video_model: str
    input_dirs: tuple[Path, ...]
    mcp_token: str | None = field(default=None, repr=False)
    tokens_file: Path | None = None
    """ALLTOKEN_MCP_TOKENS_FILE: one bearer token per person (`people.TokensFile`); excludes `mcp_token`."""
    introspection_url: str | None = field(default=None, repr=False)
    """ALLTOKEN_MCP_INTROSPECTION_URL: OAuth tokens checked by an identity provider (`people.Introspection`;
    it may carry the client's credentials); excludes the two above."""
    downloads: DownloadLimits = field(default_factory=DownloadLimits)
    rejected_key: KeyProblem | None = None
    """Why the configured ALLTOKEN_API_KEY was not used (a placeholder, quotes...); None if none was set."""
    upstream_name: str | None = None
    """What jobs record as their upstream instead of the base URL (`--simulate` names its simulator)."""
    daily_budget_usd: Decimal | None = None
    """Paid calls are refused once today's (UTC) known spend reaches this; None: no budget."""
    confirm: ConfirmMode = "never"
    """Which paid renders the user is asked to confirm (MCP form elicitation) before they are sent."""
    media_secret: bytes | None = field(default=None, repr=False)
    """Signs media download URLs over HTTP (`media_urls`); the same on every replica. None: per process."""
    public_url: str | None = None
    """The base URL clients reach the HTTP server at (behind a balancer), no trailing slash; None: the
    address it listens on."""
    output_dir_configured: bool = False
    """ALLTOKEN_OUTPUT_DIR (or --output-dir) was given. When not, a client's first root holds new files."""
    previews: bool = True
    """ALLTOKEN_PREVIEWS: image results carry a small inline preview (on by default)."""
    database_url: str | None = field(default=None, repr=False)
    """A PostgreSQL URL (a team server's shared store; it may carry a password); None: the SQLite file
    `database_path`."""

    @property
    def key_problem(self) -> KeyProblem | None:
        """Why there is no usable key; None when there is one."""
        if self.api_key:
            return None
        return self.rejected_key or KEY_NOT_SET

    @property
    def upstream(self) -> Upstream:
        """The upstream this server's jobs belong to (and the only one whose jobs it touches)."""
        return Upstream(
            base_url=self.upstream_name or self.base_url,
            key_fingerprint=key_fingerprint(self.api_key) if self.api_key else None,
        )

    @property
    def origin(self) -> str:
        """Scheme + host (+ port) of the base URL: where the public `/api-account` endpoints live."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def database_path(self) -> Path:
        return self.home / "state.sqlite3"

    @property
    def database_location(self) -> str:
        """The store as messages name it: the PostgreSQL URL without its password, or the SQLite file."""
        return shown_url(self.database_url) if self.database_url else str(self.database_path)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def default_home(env: Mapping[str, str]) -> Path:
    """The per-user data directory (XDG on Linux, Library on macOS, APPDATA on Windows)."""
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or env.get("APPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "alltoken-mcp"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "alltoken-mcp"
    xdg = env.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "alltoken-mcp"


def _validate_base_url(value: str, name: str, example: str = DEFAULT_BASE_URL) -> str:
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name}={value!r} is not an http(s) URL; expected e.g. {example}")
    # Request paths are appended to the base URL: anything after a ? or # would swallow them.
    if "?" in url or "#" in url:
        raise SettingsError(f"{name}={value!r} must not carry a query or fragment")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise SettingsError(f"{name}={value!r} contains whitespace or control characters")
    if not parts.hostname:
        raise SettingsError(f"{name}={value!r} names no host; expected e.g. {example}")
    try:
        port = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        port = 0
    if port == 0:
        raise SettingsError(f"{name}={value!r} has an invalid port (1-65535)")
    return url.rstrip("/")


def _parse_wait(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number of seconds") from None
    if not (0 < seconds <= MAX_ALLOWED_WAIT_SECONDS) or seconds != seconds:
        # Not 0 ("no deadline"): every call needs a finite budget, hosts abandon calls that hang.
        raise SettingsError(
            f"{name}={value!r} must be more than 0 and at most {MAX_ALLOWED_WAIT_SECONDS:g} seconds: it is "
            "the longest any tool call may take (media tools return a job at once with wait_seconds=0)"
        )
    return seconds


def _model_id(value: str, name: str) -> str:
    value = value.strip()
    if not value or len(value) > 200 or any(c.isspace() or not c.isprintable() for c in value):
        raise SettingsError(f"{name}={value!r} is not a model id (no spaces, at most 200 characters)")
    return value


def expand_home(text: str | Path) -> Path | None:
    """`text` as a path with a leading `~` or `~user` expanded; None when that home cannot be found (an
    unknown user, no HOME): `Path.expanduser` raises RuntimeError then, which callers must not see."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return None


def _writable_dir(path: Path, name: str) -> Path:
    """Create the directory if needed and prove it is writable, so a bad path fails at startup."""
    expanded = expand_home(path)
    if expanded is None:
        raise SettingsError(f"{name}={str(path)!r} starts with a home directory that does not exist here")
    path = expanded
    if not path.is_absolute():
        path = Path.cwd() / path
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"{name}={str(path)!r} is not a writable directory ({exc.strerror or exc})"
        ) from None
    return path


def _tokens_file(value: str | None, *, has_token: bool) -> Path | None:
    if value is None:
        return None
    if has_token:
        raise SettingsError(
            f"set {MCP_TOKEN_VAR} (one shared token) or {TOKENS_FILE_VAR} (a token per person), not both"
        )
    path = expand_home(value.strip())
    if path is None:
        raise SettingsError(
            f"{TOKENS_FILE_VAR}={value!r} starts with a home directory that does not exist here"
        )
    return path


def _introspection_url(value: str | None, *, has_token: bool) -> str | None:
    if value is None:
        return None
    if has_token:
        raise SettingsError(
            f"set one of {MCP_TOKEN_VAR}, {TOKENS_FILE_VAR} and {INTROSPECTION_URL_VAR}, not several"
        )
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise SettingsError(
            f"{INTROSPECTION_URL_VAR}={shown_url(url)!r} is not an http(s) URL; expected the identity "
            "provider's token introspection endpoint, e.g. https://client:secret@idp.example.com/introspect"
        )
    return url


def _mcp_token(value: str | None, name: str) -> str | None:
    """The HTTP bearer token. Surrounding whitespace is dropped (a token read from a file keeps its line
    break, and the Authorization header never carries one); anything a client could not send as one
    header word is refused, since no request could then be let in. The value is never quoted back."""
    token = (value or "").strip()
    if not token:
        return None
    if not all(c.isascii() and c.isprintable() and not c.isspace() for c in token):
        raise SettingsError(
            f"{name} must be one word of visible ASCII characters (it is sent in an HTTP header); "
            "the value set has spaces, control or non-ASCII characters"
        )
    return token


def _media_secret(value: str | None, name: str) -> bytes | None:
    """The media URL signing secret: one word of visible ASCII, long enough not to be guessed. Never
    echoed."""
    secret = (value or "").strip()
    if not secret:
        return None
    if not all(c.isascii() and c.isprintable() and not c.isspace() for c in secret):
        raise SettingsError(f"{name} must be one word of visible ASCII characters (`openssl rand -hex 32`)")
    if len(secret) < MIN_MEDIA_SECRET_CHARS:
        raise SettingsError(
            f"{name} is {len(secret)} characters; use at least {MIN_MEDIA_SECRET_CHARS} random ones "
            "(e.g. `openssl rand -hex 32`)"
        )
    return secret.encode("ascii")


def _public_url(value: str | None) -> str | None:
    """The HTTP server's external base URL, checked as the base URL is (media URLs are built on it)."""
    return _validate_base_url(value, PUBLIC_URL_VAR, "https://mcp.example.com") if value else None


def shown_url(url: str) -> str:
    """`url` as it may be shown or logged: a password in it (user:password@, ?password=) is replaced by
    `***`. Anything that is not a URL (a keyword=value string may hold password=…) is not shown at all.
    Never raises."""
    if "://" not in url:
        return "***"
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
        if (netloc, query) == (parts.netloc, parts.query):
            return url
        # Not urlunsplit: it drops the `//` of a URL with no host (postgresql:///db, a local socket).
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return f"{url.partition('://')[0]}://***"


def _database_url(value: str, name: str) -> str:
    """A PostgreSQL connection URL (libpq's form; a keyword=value string is not accepted, so that the
    password can always be found and hidden). Checked for its shape only: reaching the server is the
    store's job, with its own one-line errors. The value is quoted back without its password."""
    url = value.strip()
    shown = shown_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not url[len(parts.scheme) :].startswith("://"):
        raise SettingsError(
            f"{name}={shown!r} is not a postgresql:// URL; expected e.g. {DATABASE_URL_EXAMPLE} "
            "(unset it to keep the embedded SQLite file)"
        )
    if any(c.isspace() or not c.isprintable() for c in url):
        raise SettingsError(f"{name}={shown!r} contains whitespace or control characters")
    try:
        port = parts.port  # raises for a port that is not a number in range
    except ValueError:
        port = 0
    if port == 0:  # (None: libpq's default, 5432)
        raise SettingsError(f"{name}={shown!r} has an invalid port (1-65535)")
    if parts.fragment:
        raise SettingsError(f"{name}={shown!r} must not carry a fragment (#...)")
    return url


def _input_dirs(value: str | None, name: str) -> tuple[Path, ...]:
    if not value:
        return (Path.cwd().resolve(),)
    dirs: list[Path] = []
    for raw in value.split(os.pathsep):
        if not raw.strip():
            continue
        path = expand_home(raw.strip())
        if path is None:
            raise SettingsError(f"{name} entry {raw!r} starts with a home directory that does not exist here")
        if not path.is_dir():
            raise SettingsError(f"{name} entry {raw!r} is not an existing directory")
        dirs.append(path.resolve())
    if not dirs:
        raise SettingsError(f"{name}={value!r} names no directory")
    return tuple(dirs)


def parse_budget(value: str, name: str) -> Decimal:
    """A daily budget in US dollars (`5`, `2.50`, `$5`): finite and more than 0."""
    try:
        amount = Decimal(value.strip().removeprefix("$"))
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise SettingsError(f"{name}={value!r} is not an amount of US dollars; expected e.g. 5 or 2.50")
    if amount <= 0:
        raise SettingsError(
            f"{name}={value!r} must be more than 0: it is the most known spend per UTC day before paid calls "
            "are refused (unset it for no budget)"
        )
    return amount


def _parse_confirm(value: str, name: str) -> ConfirmMode:
    mode = value.strip().lower()
    if mode not in CONFIRM_MODES:
        raise SettingsError(
            f"{name}={value!r} must be never, video (ask before each video render) or media (ask before each "
            "image or video job)"
        )
    return mode


_SWITCH = {
    "on": True,
    "true": True,
    "1": True,
    "yes": True,
    "off": False,
    "false": False,
    "0": False,
    "no": False,
}


def _switch(value: str, name: str) -> bool:
    try:
        return _SWITCH[value.strip().lower()]
    except KeyError:
        raise SettingsError(f"{name}={value!r} must be on or off") from None


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration. `overrides` (from CLI flags) win over the environment."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value is not None and value.strip() != "" else None

    # An unusable key is not a start-up error: the server starts, and the calls that need the key (and
    # `doctor`) say what is wrong with it. A host only shows "Failed to connect" for a server that exits.
    raw_key = overrides.get("api_key") or env.get(API_KEY_VAR)
    rejected_key = key_problem(raw_key) if raw_key is not None else None
    api_key = raw_key.strip() if raw_key is not None and rejected_key is None else None

    base_url = _validate_base_url(
        overrides.get("base_url") or get("ALLTOKEN_BASE_URL") or DEFAULT_BASE_URL, "ALLTOKEN_BASE_URL"
    )
    home_raw = overrides.get("home") or get("ALLTOKEN_MCP_HOME")
    home = _writable_dir(Path(home_raw) if home_raw else default_home(env), "ALLTOKEN_MCP_HOME")
    output_raw = overrides.get("output_dir") or get("ALLTOKEN_OUTPUT_DIR")
    output_dir = _writable_dir(Path(output_raw) if output_raw else home / "media", "ALLTOKEN_OUTPUT_DIR")
    wait_raw = get("ALLTOKEN_MAX_WAIT_SECONDS")
    max_wait = (
        _parse_wait(wait_raw, "ALLTOKEN_MAX_WAIT_SECONDS")
        if wait_raw is not None
        else DEFAULT_MAX_WAIT_SECONDS
    )
    if "max_wait_seconds" in overrides:
        max_wait = _parse_wait(str(overrides["max_wait_seconds"]), "--max-wait-seconds")

    return Settings(
        api_key=api_key,
        base_url=base_url,
        home=home,
        output_dir=output_dir.resolve(),
        max_wait_seconds=max_wait,
        default_chat_model=_model_id(
            get("ALLTOKEN_DEFAULT_CHAT_MODEL") or DEFAULT_CHAT_MODEL, "ALLTOKEN_DEFAULT_CHAT_MODEL"
        ),
        default_image_model=_model_id(
            get("ALLTOKEN_DEFAULT_IMAGE_MODEL") or DEFAULT_IMAGE_MODEL, "ALLTOKEN_DEFAULT_IMAGE_MODEL"
        ),
        default_video_model=_model_id(
            get("ALLTOKEN_DEFAULT_VIDEO_MODEL") or DEFAULT_VIDEO_MODEL, "ALLTOKEN_DEFAULT_VIDEO_MODEL"
        ),
        input_dirs=_input_dirs(get("ALLTOKEN_INPUT_DIRS"), "ALLTOKEN_INPUT_DIRS"),
        mcp_token=_mcp_token(get(MCP_TOKEN_VAR), MCP_TOKEN_VAR),
        tokens_file=_tokens_file(get(TOKENS_FILE_VAR), has_token=get(MCP_TOKEN_VAR) is not None),
        introspection_url=_introspection_url(
            get(INTROSPECTION_URL_VAR),
            has_token=get(MCP_TOKEN_VAR) is not None or get(TOKENS_FILE_VAR) is not None,
        ),
        rejected_key=rejected_key,
        daily_budget_usd=parse_budget(budget_raw, BUDGET_VAR) if (budget_raw := get(BUDGET_VAR)) else None,
        confirm=_parse_confirm(confirm_raw, CONFIRM_VAR) if (confirm_raw := get(CONFIRM_VAR)) else "never",
        media_secret=_media_secret(get(MEDIA_SECRET_VAR), MEDIA_SECRET_VAR),
        public_url=_public_url(get(PUBLIC_URL_VAR)),
        output_dir_configured=output_raw is not None,
        previews=_switch(get("ALLTOKEN_PREVIEWS") or "on", "ALLTOKEN_PREVIEWS"),
        database_url=_database_url(url_raw, DATABASE_URL_VAR) if (url_raw := get(DATABASE_URL_VAR)) else None,
    )
