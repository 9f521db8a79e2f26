"""Reading a host's config file, and replacing it so that no crash or race leaves a broken one.

A replacement is written to a temp file in the same directory (mode 0600 from its creation, so a key is
never readable by others even for a moment), fsynced, given the old file's mode and renamed over it. The
old bytes are first copied to `<file>.bak-<timestamp>`. A symlinked config (dotfiles) is followed: the
link stays and its target is replaced. If the file changed since it was read — a running host rewriting
it — nothing is written and the person is asked to run the command again.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

NEW_FILE_MODE = 0o600
MAX_BACKUPS_PER_SECOND = 100


class ConfigError(Exception):
    """One line for the person at the terminal. Whatever raised it has written nothing."""


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    text: str | None
    """None: the file does not exist (yet)."""


def read_config(path: Path) -> ConfigFile:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ConfigFile(path, None)
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return ConfigFile(path, data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; fix it or move it aside (nothing changed)") from None


def file_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def write_config(config: ConfigFile, new_text: str) -> Path | None:
    """Replace `config.path` with `new_text`; return where the old bytes were saved (None for a new file)."""
    target = Path(os.path.realpath(config.path))
    try:
        current = target.read_bytes()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise ConfigError(f"cannot read {config.path}: {exc.strerror or exc}") from None
    expected = None if config.text is None else config.text.encode("utf-8")
    if current != expected:
        raise ConfigError(
            f"{config.path} changed while it was being edited (is the host running and rewriting it?); "
            "run the command again"
        )
    try:
        if current is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            backup, mode = None, NEW_FILE_MODE
        else:
            mode = stat.S_IMODE(os.stat(target).st_mode)
            backup = _save_backup(target, current, mode)
        _replace(target, new_text.encode("utf-8"), mode)
    except OSError as exc:
        raise ConfigError(f"cannot write {config.path}: {exc.strerror or exc} (nothing changed)") from None
    return backup


def save_backup(config: ConfigFile) -> Path | None:
    """Copy the file as it was read, before another program (a host's own CLI) changes it."""
    if config.text is None:
        return None
    target = Path(os.path.realpath(config.path))
    try:
        return _save_backup(target, config.text.encode("utf-8"), stat.S_IMODE(os.stat(target).st_mode))
    except OSError as exc:
        raise ConfigError(f"cannot back up {config.path}: {exc.strerror or exc} (nothing changed)") from None


def restore(config: ConfigFile) -> None:
    """Put back what `config` held before a write (remove the file if there was none)."""
    target = Path(os.path.realpath(config.path))
    if config.text is None:
        with suppress(FileNotFoundError):
            target.unlink()
        return
    _replace(target, config.text.encode("utf-8"), stat.S_IMODE(os.stat(target).st_mode))


def _save_backup(target: Path, data: bytes, mode: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(MAX_BACKUPS_PER_SECOND):
        suffix = "" if attempt == 0 else f"-{attempt}"
        backup = target.with_name(f"{target.name}.bak-{stamp}{suffix}")
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
        except FileExistsError:
            continue
        _write_all(fd, data)
        os.chmod(backup, mode)
        return backup
    raise FileExistsError(f"too many backups of {target} this second")


def _replace(target: Path, data: bytes, mode: int) -> None:
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    try:
        _write_all(fd, data)
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(target.parent)


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
