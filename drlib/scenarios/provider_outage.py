"""Failure Scenarios → Scenario 6: Provider Outage. Probe the primary provider's database host and S3
endpoint (timeouts, not hangs), wait for it if the outage may be temporary, and otherwise fail over:
provision the alternative provider, restore the database (Option B) and the storage bucket into it from
the backup copies kept there (the other scenarios' runbooks, on the profile's alternative view), switch
the profile's connection settings, restart the application against them and verify. Once the primary is
back, fail back (switch back, restart)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

from drlib import failover
from drlib.app.functional import login_and_create_job
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile, load_profile
from drlib.evidence import Evidence
from drlib.exceptions import DrillRefused, NotConfigured
from drlib.faults_provider import cut_primary_provider
from drlib.lazy import lazy_module
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget
from drlib.postgres.restore import MAX_RESTORE_JOBS
from drlib.preflight import stack_reachable
from drlib.reachability import Reachability, probe_profile, wait_until_up
from drlib.replication import replicate_backups, second_location_checks
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.scenarios.postgres_database_loss import PostgresDatabaseLoss
from drlib.scenarios.storage_loss import StorageLoss, s3_reachable_checks
from drlib.staging import DrillSetup, fail_after_backup, write_rows_after_backup
from drlib.steps import Outcome, combined, step
from drlib.storage.backends import S3Storage, live_storage
from drlib.storage.backup import snapshot_bucket

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")


class ProviderOutage(Runbook):
    """The primary provider is down: wait for it, or restore into the alternative and switch to it."""

    scenario = "provider_outage"
    title = "Provider outage"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("probe_timeout", int, 5, "seconds each probe of a database host or S3 endpoint may take", minimum=1),
        Param(
            "wait_seconds",
            int,
            0,
            "how long to wait for the primary to come back before failing over (0: the outage is extended, "
            "fail over now)",
            minimum=0,
        ),
        Param("probe_interval", int, 10, "seconds between probes while waiting", minimum=1),
        Param("backup", str, "latest", "database backup on the alternative: 'latest' before failure_time, or a name"),
        Param("storage_backup", str, "latest", "bucket snapshot on the alternative: 'latest' or a name"),
        Param("jobs", int, 4, "parallel pg_restore jobs (-j)", minimum=1, maximum=MAX_RESTORE_JOBS),
        Param("switch", bool, True, "switch the profile's connection settings to the alternative after the restore"),
        Param(
            "fail_back", bool, False, "once the primary answers again, switch back to it and restart the application"
        ),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
        Param(
            "drill_end_outage",
            bool,
            False,
            "drills only: bring the sandbox's primary back before failing back, and stop the alternative after",
        ),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        name = self.profile.name
        self.primary = self.profile if self.profile.provider == "primary" else load_profile(name, provider="primary")
        #: the primary answered (at first, or while waiting): no failover needed
        self.primary_up = False

    def alternative(self) -> Profile:
        """The profile's view on its alternative provider (NotConfigured without a ``[failover]`` section)."""
        return load_profile(self.profile.name, provider="alternative")

    def _probe(self, profile: Profile) -> list[Reachability]:
        return probe_profile(profile, timeout=self.values["probe_timeout"])

    # Symptoms -----------------------------------------------------------------------------
    @step(
        "detect_outage",
        title="Check the provider's status",
        what="""Probe the primary provider: its database host (a TCP connection, then `SELECT 1`) and its S3
        endpoint (a TCP connection, then `HeadBucket` on the live bucket). Every probe ends within
        `probe_timeout` seconds and names how it failed: connection refused (nothing listens), a timeout (no
        connection at all), no answer (connection accepted, nothing said back: a hung server or a blackhole),
        a name that does not resolve, or credentials refused.""",
        why="""A provider outage shows as the database and the storage unavailable at once; an application that
        waits on a dead endpoint hangs instead of failing, so the probes are bounded. Which part is down, and
        how, decides between waiting and failing over.""",
        if_fails="""Nothing to fix here: the table names each endpoint's state. Check the provider's status page
        too (a regional incident, a maintenance window) before deciding.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def detect_outage(self) -> Outcome:
        found = self._probe(self.primary)
        self.primary_up = all(r.up for r in found)
        self.evidence.note("outage", [r.row() for r in found])
        return Outcome(
            "Provider status",
            facts={"primary": "answers: no outage found" if self.primary_up else "DOWN"},
            checks=Checks(r.check(warn_only=True) for r in found),
            table=lambda: pd.DataFrame([r.row() for r in found]),
        )

    # Step 1-2 -------------------------------------------------------------------------------
    @step(
        "wait_for_provider",
        title="Steps 1-2: Wait for the provider (if temporary)",
        what="""Re-probe the primary every `probe_interval` seconds for up to `wait_seconds`. If it answers
        again, the outage was temporary: nothing is restored or switched (every later step says so). With
        `wait_seconds = 0` (the outage is known to be extended) it is probed once more and the failover goes on.""",
        why="""A failover costs a restore and loses what was written since the last replicated backup; a
        provider that is back in minutes costs neither.""",
        if_fails="Nothing fails here: when the primary stays down, the next steps fail over.",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def wait_for_provider(self) -> Outcome:
        found, waited = wait_until_up(
            lambda: self._probe(self.primary),
            wait_seconds=self.values["wait_seconds"],
            interval=self.values["probe_interval"],
        )
        self.primary_up = all(r.up for r in found)
        decision = "the primary answers: no failover" if self.primary_up else "the primary is still down: fail over"
        self.evidence.note("failover_decision", decision)
        return Outcome(
            "Wait for the provider",
            facts={"waited seconds": round(waited, 1), "decision": decision},
            table=lambda: pd.DataFrame([r.row() for r in found]),
        )

    # Step 3 ---------------------------------------------------------------------------------
    @step(
        "provision_alternative",
        title="Step 3a: Provision the alternative provider",
        what="""Bring up the alternative provider named by the profile's `[failover]` section: on the sandbox, a
        second PostgreSQL cluster and a second S3 endpoint (started on demand, empty); elsewhere the operator
        provisions it (infrastructure as code in the other region) and this step checks that its database host
        and S3 endpoint answer.""",
        why="Nothing can be restored into a provider that does not answer.",
        if_fails="""The table names the alternative endpoint that does not answer and how; provision it or fix
        `[failover]` in the profile, then re-run this cell.""",
        roll_back="Stop the alternative again (the sandbox's: `drlib sandbox down`); it holds nothing yet.",
        dry_run="skip",
        would="start or check {rb.profile.name}'s alternative provider",
    )
    def provision_alternative(self) -> Outcome:
        if self.primary_up:
            return Outcome("Provision the alternative", facts={"provisioned": "not needed: the primary answers"})
        how = "provisioned by the operator (checked below)"
        if self.profile.is_sandbox:
            from drlib.sandbox.alternative import AlternativeProvider
            from drlib.sandbox.stack import sandbox_for

            AlternativeProvider(sandbox_for(self.profile)).provision()
            how = "the sandbox's second PostgreSQL and S3 endpoint"
        found = self._probe(self.alternative())
        self.set_state("alternative provider", f"provisioned ({how})")
        return Outcome(
            "Provision the alternative",
            facts={"how": how},
            checks=Checks(r.check() for r in found),
            table=lambda: pd.DataFrame([r.row() for r in found]),
        )

    @step(
        "locate_backup_copies",
        title="Step 3b: Locate the backups on the alternative provider",
        what="""The newest database backup and storage backups kept on the alternative provider (the copies
        `drlib failover replicate` makes: the runbook's multi-region backups), each verified against its
        manifest there, next to the primary's newest (which may not be readable during the outage).""",
        why="""Backups that lived only on the failed provider are as unreachable as its database: the restore
        must come from a copy elsewhere, and that copy must be whole.""",
        if_fails="""A kind of backup found in one place only cannot be restored on the alternative: look for
        another copy (an off-site archive) and put it in the alternative's backup folder or bucket; a damaged
        copy: pick an older one with `backup` / `storage_backup`.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def locate_backup_copies(self) -> Outcome:
        try:
            alternative = self.alternative()
        except NotConfigured as exc:
            if self.confirm:
                raise
            return Outcome("Backups on the alternative", facts={"alternative": exc.message})
        results, rows = second_location_checks(self.primary, alternative)
        return Outcome(
            "Backups on the alternative", checks=Checks(results), table=(lambda: pd.DataFrame(rows)) if rows else None
        )

    # Step 3c-3d: the other scenarios' runbooks, on the alternative ---------------------------
    @step(
        "restore_database",
        title="Step 3c: Restore the database into the alternative provider",
        what="""The PostgreSQL database loss runbook's checklist, restore (Option B: a new database from the
        newest backup copy on the alternative before `failure_time`, verified, then renamed into place) and
        verification, run on the profile's alternative view: the alternative database host and backup folder.
        The same code as that notebook, recording its steps into this run.""",
        why="The application cannot run anywhere without its database.",
        if_fails="""As in the PostgreSQL database loss notebook: a damaged copy, pick another with `backup`;
        the alternative server refusing the credentials, fix the secret named in `[failover.database]`.""",
        roll_back="""Drop the restored database on the alternative (`DROP DATABASE <name>`): the primary is
        untouched by all of this.""",
        composite=True,
    )
    def restore_database(self) -> Outcome:
        skip = self._no_restore_because()
        if skip:
            return self._record("restore_database", "Restore the database", skip)
        database = PostgresDatabaseLoss(
            evidence=self.evidence,
            on=self.alternative(),
            **self.common_values(),
            backup=self.values["backup"],
            option="B",
            jobs=self.values["jobs"],
            health_timeout=self.values["health_timeout"],
        )
        outcome = combined(
            "Restore the database into the alternative",
            database.pre_restore_checklist(),
            database.stop_application(),
            database.restore_database(),
            database.verify_restore(),
        )
        if self.confirm:
            self.set_state("database", f"restored on the alternative provider ({database.target.settings.address})")
        return outcome

    @step(
        "restore_storage",
        title="Step 3d: Restore storage into the alternative provider",
        what="""The file storage loss runbook for S3 on the alternative view: the alternative's live bucket, the
        newest bucket snapshot in the alternative's backups bucket before `failure_time`, copied back by
        server-side copy, then every object checked against the snapshot's manifest and every
        `storage_key` the restored database names found.""",
        why="Artifacts the database points at must be downloadable from the provider the application now uses.",
        if_fails="""As in the file storage loss notebook: a snapshot without a manifest or one that does not
        match, pick another with `storage_backup`; an unreachable bucket, check `[failover.storage]`.""",
        roll_back="""Empty the alternative's live bucket again; the primary's bucket is untouched.""",
        composite=True,
        needs=("storage",),
    )
    def restore_storage(self) -> Outcome:
        skip = self._no_restore_because()
        if skip:
            return self._record("restore_storage", "Restore storage", skip)
        storage = StorageLoss(
            evidence=self.evidence,
            on=self.alternative(),
            **self.common_values(),
            storage_kind="s3",
            storage_backup=self.values["storage_backup"],
            health_timeout=self.values["health_timeout"],
        )
        outcome = combined(
            "Restore storage into the alternative",
            storage.identify_affected_storage(),
            storage.locate_backup(),
            storage.restore_storage(),
            storage.verify_restore(),
        )
        if self.confirm:
            self.set_state("storage", f"restored on the alternative provider ({storage.live.description})")
        return outcome

    # Step 4 ---------------------------------------------------------------------------------
    @step(
        "switch_provider",
        title="Step 4: Update the configuration (switch the profile to the alternative)",
        what="""Point the profile at its alternative provider (`drlib failover switch --confirm`): recorded in
        the state folder with who, when and why, honoured by every drlib command and notebook of this profile,
        and undone by `drlib failover back`. Refused when the alternative does not answer. With
        `switch = False` nothing is switched (the application keeps pointing at the dead provider).""",
        why="""The restored copies serve nobody until the configuration points at them (the runbook's "Update
        DNS/configurations").""",
        if_fails="""The message names the alternative endpoint that does not answer: nothing was switched.
        Re-run the provision step, then this cell.""",
        roll_back="`drlib failover back --env <profile> --confirm` (also Step 6).",
        dry_run="plan",
    )
    def switch_provider(self) -> Outcome | RestorePlan:
        if self.primary_up or not self.values["switch"]:
            why = "the primary answers" if self.primary_up else "switch = False"
            return Outcome(
                "Switch provider",
                facts={"switched": f"no ({why})", "active": failover.current_provider(self.profile.name)},
            )
        try:
            done = failover.switch_provider(
                self.profile.name,
                to="alternative",
                confirm=self.confirm,
                reason=f"provider outage (failure at {self.failure_time.isoformat()})",
                timeout=self.values["probe_timeout"],
            )
        except NotConfigured as exc:
            if self.confirm:
                raise
            return RestorePlan(action="switch to the alternative provider", steps=(f"once provisioned: {exc.message}",))
        if isinstance(done, RestorePlan):
            return done
        self.set_state(
            "profile",
            f"on its alternative provider (`drlib failover back --env {self.profile.name} --confirm` undoes it)",
        )
        return Outcome("Switch provider", facts={"switched": f"{done.before} -> {done.after}", **done.changes})

    # Step 5 ---------------------------------------------------------------------------------
    @step(
        "restart_application",
        title="Step 5: Restart the application and verify",
        what="""Restart the application as the profile now runs it (on the sandbox: the API started against the
        alternative database) and wait for `GET /health`; then the test account logs in and a content job is
        created.""",
        why="""Users notice what the application does: the outage ends when it answers on the alternative
        provider (the measured RTO).""",
        if_fails="""An application still pointing at the dead provider answers 503 (or not at all): check the
        switch (Step 4) and the application's configuration on the alternative (`[failover.app]`).""",
        roll_back="Switch back (Step 6) and restart the application.",
        dry_run="skip",
        would="restart the application against the provider the profile points at and check health, login, a new job",
        needs=("app",),
        ends_outage=True,
    )
    def restart_application(self) -> Outcome:
        if self.primary_up:
            return Outcome("Restart application", facts={"restarted": "no: the primary answers"})
        active = load_profile(self.profile.name)
        checks = failover.restart_application(active, active, timeout=self.values["health_timeout"])
        if checks and checks[0].passed:
            checks += login_and_create_job(active)
        facts = {"provider": active.provider, "database": active.database.address}
        self.set_state("application", f"restarted against the {active.provider} provider ({active.database.address})")
        return Outcome("Restart application", facts=facts, checks=self.service_restored_if(Checks(checks)))

    # Step 6 ---------------------------------------------------------------------------------
    @step(
        "fail_back",
        title="Step 6: Fail back once the primary is back",
        what="""With `fail_back = True`: wait (up to `wait_seconds`) for the primary to answer, switch the
        profile back to it (`drlib failover back`) and restart the application against it. Otherwise the
        profile stays on the alternative and this step only says how to come back. Rows written on the
        alternative meanwhile are not copied back: back it up and restore it into the primary first if they
        matter. A drill (`drill_end_outage`) first brings the sandbox's primary back, and afterwards stops the
        alternative it started.""",
        why="The alternative is a stand-in: the primary (and its backups, monitoring) is where the stack lives.",
        if_fails="""The primary does not answer yet: stay on the alternative and re-run this cell later. A
        failed restart: the table names the health check; `drlib failover switch --confirm` goes to the
        alternative again.""",
        roll_back="`drlib failover switch --env <profile> --confirm` points the profile at the alternative again.",
        dry_run="skip",
        would="switch {rb.profile.name} back to its primary once it answers, and restart the application",
    )
    def fail_back(self) -> Outcome:
        name = self.profile.name
        if not self.values["fail_back"]:
            return Outcome(
                "Fail back",
                facts={
                    "active": failover.current_provider(name),
                    "later": f"drlib failover back --env {name} --confirm",
                },
            )
        from drlib.sandbox.stack import sandbox_for

        if self.values["drill_end_outage"]:
            if not self.profile.is_sandbox:
                raise DrillRefused("drill_end_outage restarts the sandbox's primary: it runs only on the sandbox")
            sandbox_for(self.profile).up()
        found, _ = wait_until_up(
            lambda: self._probe(self.primary),
            wait_seconds=self.values["wait_seconds"],
            interval=self.values["probe_interval"],
        )
        results: list[CheckResult] = [r.check(prefix="back:") for r in found]
        if all(r.up for r in found):
            before = load_profile(name)
            done = failover.switch_provider(
                name, to="primary", confirm=True, reason="fail back after the provider outage"
            )
            assert not isinstance(done, RestorePlan)
            after = load_profile(name)
            results += [
                check("failed_back", after.provider == "primary", expected="primary", observed=after.provider),
                *failover.restart_application(before, after, timeout=self.values["health_timeout"]),
            ]
            self.set_state("profile", f"back on its primary provider ({after.database.address})")
            self.set_state("application", f"restarted against the primary provider ({after.database.address})")
        if self.values["drill_end_outage"] and self.profile.is_sandbox:
            from drlib.sandbox.alternative import AlternativeProvider

            AlternativeProvider(sandbox_for(self.profile)).stop()
            self.set_state("alternative provider", "stopped (the drill started it on demand)")
        return Outcome("Fail back", facts={"active": failover.current_provider(name)}, checks=Checks(results))

    # -- helpers ------------------------------------------------------------------------------
    def _no_restore_because(self) -> str:
        """Why the alternative is not restored into: the primary answers, or (a dry run) it is not there yet."""
        if self.primary_up:
            return "not needed: the primary answers"
        if self.confirm:
            return ""
        try:
            found = self._probe(self.alternative())
        except NotConfigured as exc:
            return f"would restore into the alternative provider once provisioned ({exc.message})"
        down = [r.describe() for r in found if not r.up]
        return f"would restore into the alternative provider once provisioned ({'; '.join(down)})" if down else ""

    def _record(self, method: str, title: str, why: str) -> Outcome:
        spec = next(s for s in self.steps() if s.method == method)
        return self.run_step(spec, lambda: Outcome(title, facts={"restore": why}))


# -- drills -----------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """The drill starts on the primary, whose database and both buckets answer."""
    if profile.provider != "primary":
        raise DrillRefused(
            f"profile {profile.name!r} is switched to its alternative provider: the drill starts on the primary. "
            f"Run `drlib failover back --env {profile.name} --confirm` first"
        )
    return stack_reachable(profile) + s3_reachable_checks(profile)


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """The alternative provider provisioned (empty); a database backup and a bucket snapshot taken and
    replicated to it; rows written after them; then the primary's S3 endpoint and PostgreSQL stopped."""
    from drlib.sandbox.alternative import AlternativeProvider
    from drlib.sandbox.stack import sandbox_for

    alternative = AlternativeProvider(sandbox_for(profile))
    alternative.provision()
    alternative.reset()
    target = PgTarget.from_profile(profile)
    backup = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    live = live_storage(profile, kind="s3")
    assert isinstance(live, S3Storage)
    snapshot_bucket(
        live=live, backups_bucket=profile.require_storage().backups_bucket, prefix=profile.backups.s3_prefix
    )
    replicate_backups(profile, load_profile(profile.name, provider="alternative"), confirm=True)
    cut: list[str] = []
    setup = fail_after_backup(
        backup,
        write=lambda token: write_rows_after_backup(target, token=token),
        inject=lambda: cut.append(cut_primary_provider(profile)),
        fault="stopped the primary provider",
    )
    return DrillSetup(
        fault=cut[0],
        failure_time=setup.failure_time,
        backup=setup.backup,
        written_after_backup=setup.written_after_backup,
        marker=setup.marker,
        notebook_parameters={"fail_back": True, "drill_end_outage": True},
        cleanup=functools.partial(end_outage, profile),
        cleanup_leaves="the sandbox's primary provider up, the profile and the application on it, "
        "the alternative provider stopped",
    )


def end_outage(profile: Profile) -> None:
    """The drill's cleanup, whatever the run came to (interrupted or crashed before its fail back too): the
    sandbox's primary running, the profile back on it, the sample API restarted against it and the
    alternative stopped, as a fail back leaves them (then nothing changes)."""
    from drlib.sandbox.alternative import AlternativeProvider
    from drlib.sandbox.stack import sandbox_for

    sandbox = sandbox_for(profile)
    sandbox.up()
    if failover.current_provider(profile.name) != "primary":
        failover.switch_provider(profile.name, to="primary", confirm=True, reason="the provider_outage drill's cleanup")
        sandbox.stop_api()
        sandbox.start_api()
    AlternativeProvider(sandbox).stop()


SCENARIO = Scenario(
    id="provider_outage",
    runbook=ProviderOutage,
    summary="Failure Scenarios → Scenario 6 of `disaster-recovery-plan.md`: the primary provider's database "
    "host and S3 endpoint probed with bounded timeouts, the database and storage restored into the alternative "
    "provider from the backup copies kept there, the profile switched to it, the application restarted and "
    "verified, then failed back.",
    stage=stage,
    preflight=preflight,
    rto_kind="full_system_loss",
    rpo_component="postgres",
    verify_after=False,
    sandbox_only=True,
    drill_sets=("fail_back", "drill_end_outage"),
)
