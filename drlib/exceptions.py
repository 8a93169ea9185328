"""One exception hierarchy for drlib.

Every message says what was checked and what the operator should do next. Messages pass
through the secret redactor, so a password can never leak through an exception.
Only ``drlib.cli`` turns these into exit codes.
"""

from __future__ import annotations


class DrlibError(Exception):
    """Root of every error drlib raises on purpose."""

    code = "drlib-error"

    def __init__(self, message: str) -> None:
        from drlib.secrets import redact

        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(DrlibError):
    """A profile or configuration file is missing or invalid."""

    code = "config"


class NotConfigured(ConfigError):
    """The profile has no section for a component (``[app]``, ``[redis]``, ``[storage]``) that is needed.

    ``detail`` is what a runbook step records when it cannot run for this reason ("not configured: …")."""

    code = "not-configured"

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or f"not configured: {self.message}"


class ParameterError(ConfigError):
    """A notebook/drill parameter is unknown, mistyped or not allowed."""

    code = "parameter"


class SecretMissing(ConfigError):
    """A secret the profile needs is not in the environment or the secrets file."""

    code = "secret-missing"


class BackupNotFound(DrlibError):
    """No backup matches the selection."""

    code = "backup-not-found"


class BackupCorrupt(DrlibError):
    """A backup exists but is empty, truncated, of the wrong format or fails its checksum."""

    code = "backup-corrupt"


class ConnectionFailed(DrlibError):
    """A server (database, Redis, S3, API) cannot be reached."""

    code = "unreachable"


class CredentialsRejected(ConnectionFailed):
    """A server was reached but refused the credentials."""

    code = "credentials"


class InsufficientDiskSpace(DrlibError):
    """Not enough free space for the operation."""

    code = "disk-space"


class ConfirmationRequired(DrlibError):
    """A destructive step was asked for without ``confirm=True``."""

    code = "confirm"


class RestoreFailed(DrlibError):
    """A restore did not complete; the message says what state things were left in."""

    code = "restore-failed"


class VerificationFailed(DrlibError):
    """One or more verification checks failed."""

    code = "verification-failed"


class ApplicationControlError(DrlibError):
    """Stopping, starting or health-checking the application failed."""

    code = "app-control"


class SandboxError(DrlibError):
    """The embedded sandbox could not be started, inspected or stopped."""

    code = "sandbox"


class DrillRefused(DrlibError):
    """A drill (failure injection) was refused for this environment."""

    code = "drill-refused"


class DrillTimeout(DrlibError):
    """A drill ran past its whole-run timeout and was stopped."""

    code = "drill-timeout"


class DrillLocked(DrlibError):
    """Another drill holds the stack."""

    code = "locked"


class DrillInterrupted(BaseException):
    """A drill received SIGINT, SIGTERM or SIGHUP; raised in the main thread to unwind it cleanly."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
