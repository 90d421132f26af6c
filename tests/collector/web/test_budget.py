"""The connection budget: the descriptor limit raised as far as needed, the cap lowered to fit."""

from __future__ import annotations

import resource

import pytest

from fleetwatch.collector.web.budget import (
    OWN_DESCRIPTORS,
    DescriptorLimitError,
    plan_budget,
)


class FakeLimits:
    """RLIMIT_NOFILE as the process would see it; setrlimit may be refused like the kernel."""

    def __init__(self, soft: int, hard: int, *, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse
        self.calls: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.calls.append(limits)
        if self.refuse:
            raise ValueError("not allowed to raise maximum limit")
        self.soft, self.hard = limits


class TestPlanBudget:
    def test_enough_descriptors_change_nothing(self) -> None:
        """A soft limit that fits the cap, its backlog and the process's own files is kept."""
        limits = FakeLimits(65536, 65536)
        budget = plan_budget(4096, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)
        assert (budget.cap, budget.descriptors, budget.raised_from) == (4096, 65536, None)
        assert not budget.lowered
        assert limits.calls == []

    def test_the_soft_limit_is_raised_as_far_as_needed(self) -> None:
        """1,024 soft under a high hard limit: raised to what 4,096 connections need, no more."""
        limits = FakeLimits(1024, 524288)
        budget = plan_budget(4096, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)
        wanted = 4096 + budget.backlog + OWN_DESCRIPTORS
        assert limits.calls == [(wanted, 524288)]
        assert (budget.cap, budget.descriptors, budget.raised_from) == (4096, wanted, 1024)
        assert not budget.lowered

    def test_a_low_hard_limit_lowers_the_cap(self) -> None:
        """Raised to the hard limit, and the cap is what fits below it."""
        limits = FakeLimits(1024, 2048)
        budget = plan_budget(4096, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)
        assert budget.descriptors == 2048
        assert budget.raised_from == 1024
        assert budget.lowered
        assert budget.cap + budget.backlog + OWN_DESCRIPTORS <= 2048
        assert budget.cap > 1500

    def test_the_unit_default_of_1024(self) -> None:
        """No LimitNOFILE and a hard limit of 1,024 too: about 750 connections, not 4,096."""
        limits = FakeLimits(1024, 1024)
        budget = plan_budget(4096, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)
        assert limits.calls == []
        assert budget.lowered
        assert budget.cap + budget.backlog + OWN_DESCRIPTORS <= 1024
        assert 700 < budget.cap < 1024 - OWN_DESCRIPTORS

    def test_a_refused_raise_keeps_the_soft_limit(self) -> None:
        """The kernel's own ceiling may refuse the hard limit: the cap fits the soft one."""
        limits = FakeLimits(1024, 1 << 20, refuse=True)
        budget = plan_budget(4096, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)
        assert budget.descriptors == 1024
        assert budget.raised_from is None
        assert budget.lowered

    def test_an_unlimited_soft_limit_holds_every_connection(self) -> None:
        limits = FakeLimits(resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        budget = plan_budget(4096, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)
        assert budget.cap == 4096
        assert limits.calls == []

    def test_too_few_descriptors_are_refused_with_the_figure(self) -> None:
        limits = FakeLimits(128, 128)
        with pytest.raises(DescriptorLimitError, match="may open 128 files"):
            plan_budget(4096, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)

    def test_a_small_cap_needs_few_descriptors(self) -> None:
        """max_connections of 100 fits in 1,024: nothing raised, nothing lowered."""
        limits = FakeLimits(1024, 4096)
        budget = plan_budget(100, getrlimit=limits.getrlimit, setrlimit=limits.setrlimit)
        assert (budget.cap, budget.raised_from) == (100, None)
        assert limits.calls == []
