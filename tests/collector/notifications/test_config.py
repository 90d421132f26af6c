"""The notifications file: what it accepts, how it names what is wrong, and how a bad new
file leaves the previous one in force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetwatch.collector.notifications.config import (
    Notifications,
    NotificationsError,
    NotificationsSource,
    Route,
)

GOOD = """
[targets.hook]
kind = "webhook"
url = "https://hooks.example/x"
secret_file = "/run/secrets/hook"

[[routes]]
targets = ["hook"]
"""


def write(tmp_path: Path, text: str, name: str = "n.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class TestFile:
    def test_a_good_file_loads(self, tmp_path: Path) -> None:
        """Targets and routes are read as declared."""
        loaded = Notifications.load(write(tmp_path, GOOD))
        assert list(loaded.targets) == ["hook"]
        assert loaded.routes[0].targets == ["hook"]
        assert loaded.smtp is None

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (GOOD.replace('targets = ["hook"]', 'targets = ["hok"]'), "routes[1]: no target named 'hok'"),
            (GOOD.replace('secret_file = "/run/secrets/hook"', ""), "targets.hook: Value error, a webhook target signs its messages"),
            (GOOD.replace("secret_file =", "secret ="), "targets.hook.secret: Extra inputs are not permitted"),
            ('[targets.m]\nkind = "email"\nto = ["a@b.example"]\n', "email targets need an [smtp] table"),
            ('[targets.m]\nkind = "email"\nto = ["a@b.example\\nBcc: x@y"]\n', "targets.m.to.0"),
            ('[targets.s]\nkind = "slack"\n', "needs one of url or url_file"),
            ('[smtp]\nhost = "m"\nsender = "f@o.example"\nsecurity = "none"\nusername = "u"\npassword_file = "/p"\n',
             "a password is never sent over a connection without TLS"),
            ('[smtp]\nhost = "m"\nsender = "f@o.example"\npassword = "hunter2"\n', "smtp.password: Extra inputs are not permitted"),
            ("[targets.hook\n", "not TOML"),
        ],
    )  # fmt: skip
    def test_what_is_wrong_is_named(self, tmp_path: Path, text: str, message: str) -> None:
        """A file that cannot be used is refused with the file and the key in the message;
        secrets written in the file itself are refused."""
        path = write(tmp_path, text)
        with pytest.raises(NotificationsError) as caught:
            Notifications.load(path)
        assert str(caught.value).startswith(f"{path}: ")
        assert message in str(caught.value)

    def test_a_bad_change_leaves_the_previous_file_in_force(self, tmp_path: Path) -> None:
        """A broken new version is reported and not used; fixed, it is."""
        path = write(tmp_path, GOOD)
        source = NotificationsSource(path)
        path.write_text(GOOD.replace('targets = ["hook"]', 'targets = ["gone"]'))
        os.utime(path, ns=(1, 1))
        assert not source.reload_if_changed()
        assert source.error is not None
        assert "no target named 'gone'" in source.error
        assert list(source.current.targets) == ["hook"]
        path.write_text(GOOD.replace("hooks.example", "hooks2.example"))
        assert source.reload_if_changed()
        assert source.error is None
        assert source.current.targets["hook"].url == "https://hooks2.example/x"


class TestRoute:
    def test_matching(self) -> None:
        """A route matches by kind, unit, rule and severity; an event without a severity
        passes min_severity, one without a rule does not pass rules."""
        route = Route(units=["parks"], min_severity="high", rules=["allowed_ports"], targets=["t"])
        assert route.matches("opened", "parks", "high", "allowed_ports")
        assert route.matches("opened", "parks", "critical", "allowed_ports")
        assert not route.matches("opened", "parks", "medium", "allowed_ports")
        assert not route.matches("opened", "schools", "high", "allowed_ports")
        assert not route.matches("opened", "parks", "high", "updates_pending")
        assert not route.matches("acknowledged", "parks", "high", "allowed_ports")
        assert not route.matches("host_stale", "parks", None, None)
        assert Route(min_severity="high", targets=["t"]).matches("host_stale", "parks", None, None)
