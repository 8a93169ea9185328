"""Signals during a drill become one clean interruption: the first raises, a second one during the
clean-up does not cut the report short, and the previous handlers come back afterwards."""

from __future__ import annotations

import os
import signal

import pytest

from drlib.exceptions import DrillInterrupted
from drlib.interrupts import signals_deferred, signals_interrupt


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_becomes_one_drill_interruption_naming_it(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(DrillInterrupted) as info, signals_interrupt():
        os.kill(os.getpid(), sig)
    assert info.value.signal_name == sig.name
    assert signal.getsignal(sig) == before


def test_a_second_signal_during_the_clean_up_is_ignored() -> None:
    with signals_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except DrillInterrupted:
            os.kill(os.getpid(), signal.SIGTERM)  # the operator insists while the report is written
            cleaned_up = True
    assert cleaned_up


def test_signals_while_the_report_is_written_are_remembered_not_acted_on() -> None:
    with signals_deferred() as received:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert received == ["SIGINT", "SIGTERM"]
