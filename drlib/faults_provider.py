"""Failure injection for the provider-outage drill (sandbox only): the primary provider goes away. Its
S3 endpoint and its PostgreSQL server are stopped, so every connection to them is refused, as when a
provider's region is down; the data on its disks stays (a provider that comes back has it again)."""

from __future__ import annotations

from drlib.config import Profile
from drlib.exceptions import DrillRefused


def cut_primary_provider(profile: Profile) -> str:
    """Stop the sandbox's S3 endpoint and PostgreSQL server; what was cut."""
    if not profile.is_sandbox:
        raise DrillRefused(
            f"the provider-outage fault stops a provider's servers and runs only on the sandbox, not on profile "
            f"{profile.name!r}: on a real stack, cut the provider off at its firewall and run the notebook"
        )
    from drlib.sandbox.stack import sandbox_for

    sandbox = sandbox_for(profile)
    sandbox.stop_s3()
    sandbox.postgres().stop()
    endpoint, database = profile.require_storage().endpoint_url, f"{profile.database.host}:{profile.database.port}"
    return f"stopped the primary provider's S3 endpoint ({endpoint}) and PostgreSQL ({database})"
