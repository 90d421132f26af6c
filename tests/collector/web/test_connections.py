"""The connection registry: who is shed when a worker nears its cap, and how it is logged."""

from __future__ import annotations

from collections.abc import Callable

from structlog.testing import capture_logs

from fleetwatch.collector.web.connections import ConnectionRegistry, Stage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Later:
    """Stands in for the event loop's call_later: the test runs what is due."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.due: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.due.append((self.clock.now + delay, callback))

    def run_due(self) -> None:
        ready = [c for when, c in self.due if when <= self.clock.now]
        self.due = [(w, c) for w, c in self.due if w > self.clock.now]
        for callback in ready:
            callback()


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.shed_count = 0

    def shed(self) -> None:
        self.shed_count += 1

    def __repr__(self) -> str:
        return self.name


class Worker:
    """A registry with a clock the test moves, and connections it opens by name."""

    def __init__(self, cap: int, headroom: int, step: float = 1.0) -> None:
        self.step = step
        self.clock = Clock()
        self.later = Later(self.clock)
        self.registry = ConnectionRegistry(
            cap, headroom=headroom, clock=self.clock, call_later=self.later
        )
        self.conns: dict[str, Conn] = {}

    def open(self, name: str, stage: Stage = Stage.HEADERS) -> bool:
        self.clock.now += self.step
        conn = self.conns[name] = Conn(name)
        self.registry.enter(conn, Stage.HEADERS)
        admitted = self.registry.admit(conn)
        if admitted and stage is not Stage.HEADERS:
            self.registry.enter(conn, stage)
        return admitted

    def move(self, name: str, stage: Stage) -> None:
        self.clock.now += self.step
        self.registry.enter(self.conns[name], stage)

    def shed(self) -> list[str]:
        return [name for name, conn in self.conns.items() if conn.shed_count]


class TestShedding:
    def test_nothing_is_shed_below_the_threshold(self) -> None:
        worker = Worker(cap=10, headroom=2)
        for n in range(8):
            assert worker.open(f"c{n}")
        assert worker.shed() == []
        assert len(worker.registry) == 8

    def test_idle_connections_go_first_oldest_first(self) -> None:
        """Past the threshold, the oldest idle keep-alive goes before older slow clients."""
        worker = Worker(cap=4, headroom=1)
        worker.open("slow-headers")
        worker.open("idle-old", Stage.IDLE)
        worker.open("idle-new", Stage.IDLE)
        worker.open("newcomer")
        assert worker.shed() == ["idle-old"]
        assert worker.registry.stage_of(worker.conns["idle-old"]) is None
        assert len(worker.registry) == 3

    def test_closing_connections_go_before_idle_ones(self) -> None:
        worker = Worker(cap=3, headroom=1)
        worker.open("idle", Stage.IDLE)
        worker.open("closing", Stage.CLOSING)
        worker.open("newcomer")
        assert worker.shed() == ["closing"]

    def test_then_the_slowest_of_handshakes_headers_and_bodies(self) -> None:
        """With no idle connection, the one longest in a slow stage goes, whatever the stage."""
        worker = Worker(cap=4, headroom=1)
        worker.open("body", Stage.BODY)
        worker.open("handshake", Stage.HANDSHAKE)
        worker.open("headers")
        worker.move("body", Stage.BODY)  # already in it: keeps its time
        worker.open("newcomer")
        assert worker.shed() == ["body"]
        worker.open("second")
        assert worker.shed() == ["body", "handshake"]

    def test_a_stage_entered_anew_starts_its_clock_again(self) -> None:
        worker = Worker(cap=3, headroom=1)
        worker.open("a")
        worker.open("b")
        worker.move("a", Stage.BODY)  # a's headers are done: its body is younger than b
        worker.open("newcomer")
        assert worker.shed() == ["b"]

    def test_requests_being_answered_are_never_shed(self) -> None:
        """The headroom admits new connections while every other one is answering; past the
        cap the newcomer itself is refused."""
        worker = Worker(cap=4, headroom=2)
        for n in range(3):
            worker.open(f"busy{n}", Stage.HANDLING)
        assert worker.open("fourth")
        assert worker.shed() == []
        worker.move("fourth", Stage.HANDLING)
        assert not worker.open("fifth")
        assert worker.shed() == []
        assert worker.registry.stage_of(worker.conns["fifth"]) is None
        assert len(worker.registry) == 4

    def test_the_newcomer_is_not_shed_to_make_room_for_itself(self) -> None:
        worker = Worker(cap=3, headroom=2)
        worker.open("busy", Stage.HANDLING)
        assert worker.open("first")
        assert worker.open("second")  # over the threshold: "first" is the slowest
        assert worker.shed() == ["first"]

    def test_leaving_twice_is_harmless(self) -> None:
        worker = Worker(cap=3, headroom=1)
        worker.open("a")
        worker.registry.leave(worker.conns["a"])
        worker.registry.leave(worker.conns["a"])
        assert len(worker.registry) == 0
        assert worker.registry.count(Stage.HEADERS) == 0


class TestSheddingLog:
    def test_one_line_per_interval_with_counts(self) -> None:
        """The first shedding is logged at once; what follows within ten seconds is counted
        into one more line, not one line per connection."""
        worker = Worker(cap=2, headroom=0, step=0.01)
        worker.open("busy", Stage.HANDLING)
        with capture_logs() as logs:
            worker.open("idle", Stage.IDLE)
            worker.open("a")  # sheds "idle"
            worker.later.run_due()
            for n in range(50):
                worker.open(f"b{n}")  # each sheds the slowest: "a", then b0, b1...
            worker.move("b49", Stage.HANDLING)
            assert not worker.open("refused")
            worker.later.run_due()
            assert len(logs) == 1
            worker.clock.now += 10
            worker.later.run_due()
        assert [(e["closed_idle"], e["closed_slow_headers"], e["refused"]) for e in logs] == [
            (1, 0, 0),
            (0, 50, 1),
        ]
        assert all(e["log_level"] == "warning" and e["cap"] == 2 for e in logs)
