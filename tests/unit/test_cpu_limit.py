"""The suite's CPU-time limit for tests that start nothing (support.cpu_limit): a loop fails,
a wait does not."""

from __future__ import annotations

import time

import pytest

from support.cpu_limit import cpu_limited


def test_a_test_that_loops_fails_once_it_has_spent_its_cpu() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"more than 0.2 s of CPU"), cpu_limited(0.2):
        while True:
            pass


def test_waiting_spends_no_cpu_and_is_not_cut_short() -> None:
    with cpu_limited(0.2):
        time.sleep(0.5)  # the wait itself is what is tested: wall-clock time, not CPU


def test_the_limit_is_gone_once_the_test_is_over() -> None:
    with cpu_limited(0.2):
        pass
    spent = time.process_time()
    while time.process_time() - spent < 0.4:
        pass
