"""The notifications API: how each target is doing, and a test message sent now."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Request

from fleetwatch.collector.web.bearer import admin_write, fleet_reader
from fleetwatch.collector.web.views import NotificationsStatus, TargetStatusView, TargetTest

if TYPE_CHECKING:
    from fleetwatch.collector.service import CollectorService


def _service(request: Request) -> CollectorService:
    return request.app.state.service  # type: ignore[no-any-return]


router = APIRouter()


@router.get(
    "/api/v1/notifications/status",
    response_model=NotificationsStatus,
    tags=["admin"],
    dependencies=[Depends(fleet_reader)],
)
def notifications_status(request: Request) -> NotificationsStatus:
    """Each notification target: deliveries pending, sent and failed, the latest error, and
    whether it is failing (the fleet's: not for a token limited to a unit)."""
    svc = _service(request)
    targets = [TargetStatusView.model_validate(asdict(s)) for s in svc.sender.status()]
    return NotificationsStatus(
        source=svc.notifications.current.source,
        error=svc.notifications.error,
        failing=[t.target for t in targets if t.state == "failing"],
        targets=targets,
    )


@router.post(
    "/api/v1/notifications/targets/{target}/test",
    response_model=TargetTest,
    tags=["admin"],
    dependencies=[Depends(admin_write)],
)
def test_target(
    request: Request, target: Annotated[str, Path(min_length=1, max_length=300)]
) -> TargetTest:
    """Send a test message to a target now (not through the event log) and say what the
    target answered."""
    result = _service(request).sender.send_test(target)
    return TargetTest(target=result.target, ok=result.ok, detail=result.detail)
