"""Signals held off a step until it ends (forensix.interrupts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from forensix.interrupts import held_interrupts, interrupt_gate


def test_ctrl_c_inside_the_step_arrives_when_it_ends():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            signal.raise_signal(signal.SIGINT)
            steps.append("finished after the signal")
    assert steps == ["finished after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_the_step_at_once():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            signal.raise_signal(signal.SIGINT)
            steps.append("held")
            signal.raise_signal(signal.SIGINT)
            steps.append("never reached")
    assert steps == ["held"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_previous_handlers_get_the_signal_and_come_back():
    got = []

    def note(signum, frame):
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, note)
    try:
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            assert got == []
        assert got == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is note
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_no_signal_no_change_and_other_threads_are_left_alone():
    with held_interrupts():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    errors = []

    def in_a_thread():
        try:
            with held_interrupts():  # signal.signal would raise ValueError off the main thread
                pass
        except Exception as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    t = threading.Thread(target=in_a_thread)
    t.start()
    t.join()
    assert errors == []


def test_a_held_sigterm_with_the_default_action_still_ends_the_process():
    code = (
        "import os, signal\n"
        "from forensix.interrupts import held_interrupts\n"
        "with held_interrupts():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('held', flush=True)\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM
    assert done.stdout == "held\n"


def test_inside_a_gate_held_steps_wait_and_the_rest_is_interrupted_at_once():
    steps = []
    with interrupt_gate():
        with pytest.raises(KeyboardInterrupt):
            with held_interrupts():
                with held_interrupts():  # nested: delivered when the outermost step ends
                    signal.raise_signal(signal.SIGINT)
                steps.append("inner step ended")
            steps.append("never reached")
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # outside a held step: at once
            steps.append("never reached")
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # the gate's, all along
    assert steps == ["inner step ended"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
